//! `before_switch` / `after_switch` hooks: user commands run by `sh -c` on the host, in the
//! release directory. Their context arrives as `SHIP_*` environment variables, never pasted
//! into the command line.

use crate::remote::script::{Script, EXIT_HOOK};

/// Context handed to hooks.
pub struct HookEnv<'a> {
    /// `SHIP_RELEASE`.
    pub release: &'a str,
    /// `SHIP_RELEASE_DIR`.
    pub release_dir: &'a str,
    /// `SHIP_DEPLOY_TO`.
    pub deploy_to: &'a str,
    /// `SHIP_PREVIOUS_RELEASE` (empty on a first deploy).
    pub previous: &'a str,
    /// `SHIP_VERSION`.
    pub version: &'a str,
    /// `SHIP_ENV`.
    pub environment: &'a str,
    /// `SHIP_HOST` (as configured).
    pub host: &'a str,
}

/// Sets the shell variable `$_ship_as` to the words that run a command as the service user
/// (`systemd.user`) when one is set: `runuser -u <user> --` as root, `sudo -n -u <user> --`
/// otherwise (keeping the `SHIP_*` variables), nothing when the script already runs as that
/// user. Hooks and `health.command` are run as `${_ship_as:-} sh -c ...` (unset: as the
/// script's user), so they never run as root when the service does not. User names are
/// validated (no spaces), so the unquoted expansion splits into exactly those words.
pub fn as_service_user(script: &mut Script, config: &crate::config::Config) {
    match config.systemd.user.as_deref() {
        Some(user) if user != "root" => {
            script.line(
                "if [ \"$(id -u)\" = 0 ]; then _ship_as=\"runuser -u \"{}' --'; elif [ \"$(id -un)\" = {} ]; then _ship_as=",
                &[user, user],
            );
            script.line(
                "else _ship_as=\"sudo -n --preserve-env=SHIP_RELEASE,SHIP_RELEASE_DIR,SHIP_DEPLOY_TO,SHIP_PREVIOUS_RELEASE,SHIP_VERSION,SHIP_ENV,SHIP_HOST -u \"{}' --'; fi",
                &[user],
            );
        }
        _ => {
            script.lines("_ship_as=");
        }
    }
}

/// Appends the hooks (after [`as_service_user`]): each runs in a subshell in the release dir; the first failure exits the
/// script with [`EXIT_HOOK`] after printing which hook failed.
pub fn run(script: &mut Script, stage: &'static str, hooks: &[String], env: &HookEnv<'_>) {
    if hooks.is_empty() {
        return;
    }
    script.line(
        "export SHIP_RELEASE={} SHIP_RELEASE_DIR={} SHIP_DEPLOY_TO={}",
        &[env.release, env.release_dir, env.deploy_to],
    );
    script.line(
        "export SHIP_PREVIOUS_RELEASE={} SHIP_VERSION={} SHIP_ENV={} SHIP_HOST={}",
        &[env.previous, env.version, env.environment, env.host],
    );
    let code = EXIT_HOOK.to_string();
    for hook in hooks {
        script.line(
            // fd 9 is the dead-man's switch lock of the script (see systemd::guard): a hook
            // that leaves a process behind must not keep it held.
            "if ! (cd {} && ${{_ship_as:-}} sh -c {} 9>&-) >&2; then printf '%s hook failed: %s\\n' {} {} >&2; exit {}; fi",
            &[env.release_dir, hook, stage, hook, &code],
        );
    }
}
