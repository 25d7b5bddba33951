//! `cargo ship completions <shell>` and `cargo ship man`: generated from the clap definition in
//! `cli.rs`, so they can never drift from the real flags.
//!
//! Both describe the command `cargo-ship` whose subcommands are `deploy`, `rollback`...: that
//! is the word list cargo's own completion hands over for `cargo ship <TAB>` (bash: cargo's
//! script forwards to `cargo-ship` with bash-completion 2.12+; zsh: `_cargo` calls
//! `_cargo-ship`), and `cargo-ship deploy ...` also runs as is (see `main.rs`).

use std::path::Path;

use cargo_ship::{Error, Result};

/// The `cargo-ship` command as completions and man pages present it.
pub fn command() -> clap::Command {
    // Built from the `Ship` flags afresh (not cloned out of the `cargo` command), so no
    // subcommand keeps a `cargo ship ...` bin name the completion scripts would key on.
    let cmd = clap::Command::new("cargo-ship")
        .version(env!("CARGO_PKG_VERSION"))
        .about(crate::cli::ABOUT)
        .long_about(crate::cli::LONG_ABOUT)
        .after_long_help(crate::cli::EXIT_CODES)
        .styles(clap_cargo::style::CLAP_STYLING);
    <crate::cli::Ship as clap::Args>::augment_args(cmd).bin_name("cargo-ship")
}

/// Writes the completion script for `shell` to stdout.
pub fn print_completions(shell: clap_complete::Shell) {
    use std::io::Write;
    let _ = std::io::stdout().write_all(completion_script(shell).as_bytes());
}

/// The completion script for `shell`.
pub fn completion_script(shell: clap_complete::Shell) -> String {
    let mut cmd = command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "cargo-ship", &mut out);
    let script = String::from_utf8_lossy(&out).into_owned();
    if shell == clap_complete::Shell::Bash {
        // clap_complete 4.6 names the per-subcommand cases of a hyphenated binary
        // `cargo__subcmd__ship__subcmd__deploy` but jumps to `cargo__ship__subcmd__deploy`, so
        // nothing after a subcommand would complete. Use the name it jumps to.
        script.replace("cargo__subcmd__ship__subcmd__", "cargo__ship__subcmd__")
    } else {
        script
    }
}

/// Writes `cargo-ship.1` and one page per subcommand (`cargo-ship-deploy.1`, ...) into `dir`,
/// creating it. Returns how many pages were written.
pub fn write_man_pages(dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create the man page directory", dir, e))?;
    // Built once so global flags reach every subcommand and usages read `cargo ship deploy`.
    let mut cmd = command()
        .bin_name("cargo ship")
        .disable_help_subcommand(true);
    cmd.build();
    let mut count = 0;
    write_page(&cmd, "cargo-ship", dir, &mut count)?;
    Ok(count)
}

fn write_page(cmd: &clap::Command, name: &str, dir: &Path, count: &mut usize) -> Result<()> {
    let page = cmd.clone().display_name(name.to_string());
    let path = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut buf)
        .map_err(|e| Error::io("render the man page", &path, e))?;
    std::fs::write(&path, buf).map_err(|e| Error::io("write the man page", &path, e))?;
    *count += 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_page(sub, &format!("{name}-{}", sub.get_name()), dir, count)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_cover_every_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let n = write_man_pages(dir.path()).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(n, names.len());
        for want in [
            "cargo-ship.1",
            "cargo-ship-deploy.1",
            "cargo-ship-rollback.1",
            "cargo-ship-config-show.1",
            "cargo-ship-completions.1",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
        let deploy = std::fs::read_to_string(dir.path().join("cargo-ship-deploy.1")).unwrap();
        assert!(deploy.contains("lock\\-wait"), "{deploy}");
        assert!(
            deploy.contains("known\\-hosts"),
            "global flags are documented: {deploy}"
        );
    }

    #[test]
    fn bash_completion_offers_subcommands_and_flags() {
        let script = completion_script(clap_complete::Shell::Bash);
        assert!(
            script.contains(
                "complete -F _cargo__ship -o nosort -o bashdefault -o default cargo-ship"
            ),
            "{script}"
        );
        assert!(script.contains("--ssh-config"));
    }
}
