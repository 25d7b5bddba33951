//! Target triples as written in the config: a rustup triple plus an optional glibc pin
//! (`x86_64-unknown-linux-gnu.2.17`, cargo-zigbuild's syntax).

use serde::Serialize;

/// A target triple with an optional glibc version pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The rustup/rustc triple, e.g. `x86_64-unknown-linux-gnu`.
    pub triple: String,
    /// The pinned glibc version (`2.17`), only for `-gnu` targets.
    pub glibc: Option<String>,
}

impl Target {
    /// Parses `triple[.major.minor]`. Returns a message saying what was expected on failure.
    pub fn parse(s: &str) -> Result<Target, String> {
        let s = s.trim();
        let (triple, glibc) = match s.find(".") {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        let parts: Vec<&str> = triple.split('-').collect();
        if parts.len() < 3
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            return Err(format!(
                "a target triple like `x86_64-unknown-linux-gnu`, found `{s}`"
            ));
        }
        if !triple.contains("-linux-") {
            return Err(format!(
                "a Linux target (the hosts run systemd), found `{s}`"
            ));
        }
        let glibc = match glibc {
            None => None,
            Some(v) => {
                if !triple.ends_with("-gnu") && !triple.ends_with("-gnueabihf") {
                    return Err(format!("a glibc pin only on a `-gnu` target, found `{s}`"));
                }
                let ok = v.split('.').count() == 2
                    && v.split('.')
                        .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
                if !ok {
                    return Err(format!(
                        "a glibc pin like `.2.17` after the triple, found `{s}`"
                    ));
                }
                Some(v.to_string())
            }
        };
        Ok(Target {
            triple: triple.to_string(),
            glibc,
        })
    }

    /// The CPU architecture part (`x86_64`, `aarch64`, ...).
    pub fn arch(&self) -> &str {
        self.triple.split('-').next().unwrap_or("")
    }

    /// True for musl targets (statically linked, no glibc requirement).
    pub fn is_musl(&self) -> bool {
        self.triple.contains("musl")
    }

    /// The architecture `uname -m` prints on a host that runs this target natively.
    pub fn uname_machine(&self) -> &str {
        match self.arch() {
            "i586" | "i686" => "i686",
            "armv7" => "armv7l",
            "arm" => "armv6l",
            other => other,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.triple)?;
        if let Some(g) = &self.glibc {
            write!(f, ".{g}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_pinned() {
        let t = Target::parse("x86_64-unknown-linux-gnu.2.17").unwrap();
        assert_eq!(t.triple, "x86_64-unknown-linux-gnu");
        assert_eq!(t.glibc.as_deref(), Some("2.17"));
        assert_eq!(t.to_string(), "x86_64-unknown-linux-gnu.2.17");
        let m = Target::parse("x86_64-unknown-linux-musl").unwrap();
        assert!(m.is_musl() && m.glibc.is_none());
        assert_eq!(
            Target::parse("aarch64-unknown-linux-gnu")
                .unwrap()
                .uname_machine(),
            "aarch64"
        );
    }

    #[test]
    fn rejects_bad_triples() {
        assert!(Target::parse("x86_64")
            .unwrap_err()
            .contains("target triple"));
        assert!(Target::parse("x86_64-apple-darwin")
            .unwrap_err()
            .contains("Linux"));
        assert!(Target::parse("x86_64-unknown-linux-musl.2.17")
            .unwrap_err()
            .contains("-gnu"));
        assert!(Target::parse("x86_64-unknown-linux-gnu.2")
            .unwrap_err()
            .contains(".2.17"));
    }
}
