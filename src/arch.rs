//! Host architectures: what `uname -m` on a host says, which target triple runs there, and
//! what to tell the user when an artifact and a host do not match.

use crate::target::Target;

/// The plain `-gnu` triple for a host whose `uname -m` is `machine`, to suggest in messages.
pub fn suggested_triple(machine: &str) -> Option<&'static str> {
    Some(match machine {
        "x86_64" => "x86_64-unknown-linux-gnu",
        "aarch64" | "arm64" => "aarch64-unknown-linux-gnu",
        "armv7l" => "armv7-unknown-linux-gnueabihf",
        "i686" | "i586" => "i686-unknown-linux-gnu",
        "riscv64" => "riscv64gc-unknown-linux-gnu",
        "ppc64le" => "powerpc64le-unknown-linux-gnu",
        "s390x" => "s390x-unknown-linux-gnu",
        _ => return None,
    })
}

/// What to do when a host whose `uname -m` is `host_machine` was offered an artifact built
/// for `artifact_target`: build for the host, or list both targets for a mixed environment.
pub fn mismatch_help(host_machine: &str, artifact_target: &str) -> String {
    let artifact = artifact_target.split('.').next().unwrap_or(artifact_target);
    match suggested_triple(host_machine) {
        Some(triple) => format!(
            "nothing was changed on this host; build for its architecture (target = \"{triple}\"), \
             or, for an environment whose hosts differ, list one target per architecture: \
             targets = [\"{artifact}\", \"{triple}\"]"
        ),
        None => format!(
            "nothing was changed on this host; build for its architecture ({host_machine}), or, \
             for an environment whose hosts differ, list one target per architecture in `targets`"
        ),
    }
}

/// What to do when no configured target runs on a host whose `uname -m` is `host_machine`.
pub fn uncovered_help(host_machine: &str) -> String {
    match suggested_triple(host_machine) {
        Some(triple) => format!(
            "nothing was changed on any host; add a target for {host_machine} to `targets` \
             (e.g. \"{triple}\"), or remove the host from the environment"
        ),
        None => format!(
            "nothing was changed on any host; add a target for {host_machine} to `targets`, or \
             remove the host from the environment"
        ),
    }
}

/// True when `target` runs natively on a host whose `uname -m` is `machine`.
pub fn runs_on(target: &Target, machine: &str) -> bool {
    target.uname_machine() == machine
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_names_both_targets() {
        assert_eq!(
            mismatch_help("aarch64", "x86_64-unknown-linux-gnu.2.17"),
            "nothing was changed on this host; build for its architecture (target = \
             \"aarch64-unknown-linux-gnu\"), or, for an environment whose hosts differ, list one \
             target per architecture: targets = [\"x86_64-unknown-linux-gnu\", \
             \"aarch64-unknown-linux-gnu\"]"
        );
        assert!(mismatch_help("mips", "x86_64-unknown-linux-gnu").contains("(mips)"));
    }

    #[test]
    fn targets_run_on_their_machine() {
        let t = |s| Target::parse(s).unwrap();
        assert!(runs_on(&t("aarch64-unknown-linux-musl"), "aarch64"));
        assert!(runs_on(&t("x86_64-unknown-linux-gnu.2.17"), "x86_64"));
        assert!(!runs_on(&t("x86_64-unknown-linux-gnu"), "aarch64"));
        assert_eq!(
            suggested_triple("aarch64"),
            Some("aarch64-unknown-linux-gnu")
        );
    }
}
