//! The ship configuration: layering, defaults and the exact text of every validation error.
//! Most tests call `cargo_ship::config::load` directly; two go through the binary.

use std::path::Path;
use std::time::Duration;

use cargo_ship::config::{self, Batch, BuilderKind, Config, LoadOptions};

use crate::support::{repo_root, Project};

/// The hello fixture's `[package]` part; the ship section written by each test starts on line 8.
const HEADER: &str = "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n[workspace]\n\n";

/// The hello fixture with `ship` (starting on line 8) as its whole ship configuration.
fn hello(ship: &str) -> Project {
    let p = Project::fixture("hello");
    p.set_manifest(&format!("{HEADER}{ship}"));
    p
}

fn opts(p: &Project, env: Option<&str>) -> LoadOptions {
    LoadOptions {
        manifest_path: Some(p.path("Cargo.toml")),
        environment: env.map(str::to_string),
        ..LoadOptions::default()
    }
}

fn load(p: &Project, env: Option<&str>) -> Config {
    match config::load(&opts(p, env)) {
        Ok(c) => c,
        Err(e) => panic!("{e}\nhelp: {:?}", e.help()),
    }
}

/// The error of loading `ship` (with environment `env`), with the project's directory replaced
/// by `<p>`, and its help.
fn error_with(ship: &str, env: Option<&str>) -> (String, Option<String>) {
    let p = hello(ship);
    let err = config::load(&opts(&p, env)).expect_err("the config should be rejected");
    let root = p.root.display().to_string();
    let canonical = std::fs::canonicalize(&p.root)
        .unwrap()
        .display()
        .to_string();
    let clean = |s: String| s.replace(&canonical, "<p>").replace(&root, "<p>");
    (clean(err.to_string()), err.help().map(clean))
}

fn error(ship: &str) -> String {
    error_with(ship, None).0
}

#[test]
fn defaults_fill_every_key() {
    for ship in ["", "[package.metadata.ship]\n"] {
        let c = load(&hello(ship), None);
        assert_eq!(c.package, "hello");
        assert_eq!(c.version, "0.1.0");
        assert_eq!(c.bin, "hello");
        assert_eq!(c.target.to_string(), "x86_64-unknown-linux-gnu");
        assert_eq!(c.builder, BuilderKind::Auto);
        assert_eq!(c.profile, "release");
        assert!(c.strip && !c.sudo);
        assert!(c.assets.is_empty() && c.shared_dirs.is_empty() && c.shared_files.is_empty());
        assert_eq!(c.deploy_to, "/opt/hello");
        assert_eq!(c.keep_releases, 5);
        assert_eq!(c.systemd.unit, "hello");
        assert_eq!(c.systemd.restart_sec, Duration::from_secs(1));
        assert!(c.systemd.hardening && c.systemd.user.is_none());
        assert_eq!(
            (c.health.timeout, c.health.settle),
            (Duration::from_secs(30), Duration::from_secs(3))
        );
        assert!(c.health.http.is_none() && c.hooks.before_switch.is_empty());
        assert!(c.environment.is_none());
        assert!(c.manifest_path.ends_with("hello/Cargo.toml"));
        assert!(c.package_root.ends_with("hello"));
    }
}

/// The example from issue #2, every key set.
const FULL: &str = r#"[package.metadata.ship]
bin = "hello"
target = "x86_64-unknown-linux-gnu.2.17"
builder = "auto"
profile = "release"
strip = true
assets = ["config/default.toml", "static"]
deploy_to = "/opt/hello"
keep_releases = 5
shared_dirs = ["data", "log"]
shared_files = ["config/production.toml"]
sudo = false

[package.metadata.ship.systemd]
unit = "hello"
args = ["--port", "8080"]
environment = { RUST_LOG = "info" }
user = "hello"
group = "hello"
restart_sec = "1s"
hardening = true

[package.metadata.ship.health]
http = "http://127.0.0.1:8080/healthz"
command = "./hello --check"
timeout = "30s"
settle = "3s"

[package.metadata.ship.hooks]
before_switch = ["./hello migrate"]
after_switch = []

[package.metadata.ship.environments.prod]
hosts = ["deploy@web1.example.com", "web2.example.com:2222"]
ssh_config = "deploy/ssh_config"
parallel = 10
batch = "25%"
deploy_to = "/srv/hello"
[package.metadata.ship.environments.prod.health]
timeout = "60s"
"#;

#[test]
fn issue_2_example_loads_with_environment_overrides() {
    let p = hello(FULL);
    p.write("deploy/ssh_config", "Host *\n");
    let base = load(&p, None);
    assert_eq!(base.deploy_to, "/opt/hello");
    assert_eq!(base.target.glibc.as_deref(), Some("2.17"));
    assert_eq!(base.health.timeout, Duration::from_secs(30));

    let c = load(&p, Some("prod"));
    assert_eq!(c.deploy_to, "/srv/hello");
    // The environment overrides health.timeout and keeps the package's health.http.
    assert_eq!(c.health.timeout, Duration::from_secs(60));
    assert_eq!(
        c.health.http.as_deref(),
        Some("http://127.0.0.1:8080/healthz")
    );
    assert_eq!(c.health.command.as_deref(), Some("./hello --check"));
    assert_eq!(c.shared_files, ["config/production.toml"]);
    assert_eq!(c.systemd.user.as_deref(), Some("hello"));
    assert_eq!(
        c.systemd.environment.get("RUST_LOG").map(String::as_str),
        Some("info")
    );
    assert_eq!(c.hooks.before_switch, ["./hello migrate"]);
    let env = c.env().unwrap();
    assert_eq!(env.name, "prod");
    let hosts: Vec<String> = env.hosts.iter().map(ToString::to_string).collect();
    assert_eq!(hosts, ["deploy@web1.example.com", "web2.example.com:2222"]);
    assert_eq!(env.hosts[1].port, Some(2222));
    assert_eq!(env.parallel, Some(10));
    assert_eq!(env.batch, [Batch::Percent(25)]);
    assert_eq!(
        env.ssh_config.as_deref(),
        Some(
            std::fs::canonicalize(p.path("deploy/ssh_config"))
                .unwrap()
                .as_path()
        )
    );
}

#[test]
fn command_line_is_the_last_layer() {
    let p = hello(
        "[package.metadata.ship]\ntarget = \"x86_64-unknown-linux-gnu\"\nprofile = \"dist\"\n",
    );
    let mut o = opts(&p, None);
    o.target = Some("x86_64-unknown-linux-musl".into());
    o.profile = Some("release".into());
    o.features = vec!["a,b".into(), "c d".into()];
    o.no_default_features = true;
    let c = config::load(&o).unwrap();
    assert_eq!(c.target.to_string(), "x86_64-unknown-linux-musl");
    assert_eq!(c.profile, "release");
    assert_eq!(c.features, ["a", "b", "c", "d"]);
    assert!(c.no_default_features && !c.all_features);

    o.target = Some("x86_64-apple-darwin".into());
    let err = config::load(&o).unwrap_err();
    assert_eq!(
        err.to_string(),
        "command line: `--target`: expected a Linux target (the hosts run systemd), found `x86_64-apple-darwin`"
    );
}

#[test]
fn environment_overrides_any_table_key_by_key() {
    let p = hello(
        "[package.metadata.ship]\nkeep_releases = 3\n\
         [package.metadata.ship.systemd]\nargs = [\"--port\", \"1\"]\nenvironment = { A = \"1\", B = \"2\" }\n\
         [package.metadata.ship.hooks]\nbefore_switch = [\"./a\"]\n\
         [package.metadata.ship.environments.staging]\nhosts = [\"s1\"]\nkeep_releases = 1\n\
         systemd.environment = { B = \"staging\" }\nhooks.after_switch = [\"./b\"]\n",
    );
    let c = load(&p, Some("staging"));
    assert_eq!(c.keep_releases, 1);
    assert_eq!(c.systemd.args, ["--port", "1"]);
    assert_eq!(c.systemd.environment["A"], "1");
    assert_eq!(c.systemd.environment["B"], "staging");
    assert_eq!(c.hooks.before_switch, ["./a"]);
    assert_eq!(c.hooks.after_switch, ["./b"]);
    assert_eq!(load(&p, None).keep_releases, 3);
}

// ---------------------------------------------------------------------------------------------
// Workspaces

fn workspace_opts(package: Option<&str>, env: Option<&str>) -> (Project, LoadOptions) {
    let p = Project::fixture("workspace-two");
    let o = LoadOptions {
        manifest_path: Some(p.path("Cargo.toml")),
        package: package.map(str::to_string),
        environment: env.map(str::to_string),
        ..LoadOptions::default()
    };
    (p, o)
}

#[test]
fn workspace_defaults_apply_to_each_package() {
    let (_p, o) = workspace_opts(Some("api"), None);
    let api = config::load(&o).unwrap();
    assert_eq!(
        (api.package.as_str(), api.bin.as_str(), api.version.as_str()),
        ("api", "api", "0.2.0")
    );
    assert_eq!(api.target.to_string(), "x86_64-unknown-linux-musl"); // workspace
    assert_eq!(api.keep_releases, 4); // workspace
    assert_eq!(api.deploy_to, "/srv/api"); // package
    assert_eq!(api.health.timeout, Duration::from_secs(45)); // workspace
    assert_eq!(
        api.health.http.as_deref(),
        Some("http://127.0.0.1:9000/healthz")
    ); // package
    assert_eq!(api.systemd.environment["APP_ENV"], "default");
    assert!(api.target_dir.is_absolute());

    let (_p, o) = workspace_opts(Some("worker"), None);
    let worker = config::load(&o).unwrap();
    assert_eq!(worker.keep_releases, 8);
    assert_eq!(worker.shared_dirs, ["queue"]);
    assert_eq!(worker.deploy_to, "/opt/worker");
    assert_eq!(worker.health.command.as_deref(), Some("./worker --check"));
}

#[test]
fn workspace_environment_merges_with_the_package_one() {
    // Order: workspace, package, workspace's `staging`, package's `staging`, command line.
    let (_p, o) = workspace_opts(Some("api"), Some("staging"));
    let api = config::load(&o).unwrap();
    let env = api.env().unwrap();
    assert_eq!(env.hosts.len(), 2);
    assert_eq!(env.hosts[0].user.as_deref(), Some("deploy"));
    assert_eq!(env.parallel, Some(2)); // api's staging
    assert_eq!(env.batch, [Batch::Count(1)]); // workspace's staging
    assert_eq!(api.keep_releases, 2); // workspace's staging beats the workspace default
    assert_eq!(api.health.timeout, Duration::from_secs(90)); // api's staging
    assert_eq!(api.health.settle, Duration::from_secs(5)); // workspace
    assert_eq!(api.systemd.environment["APP_ENV"], "staging");
    assert_eq!(api.systemd.environment["RUST_LOG"], "info");

    let (_p, o) = workspace_opts(Some("worker"), Some("staging"));
    assert_eq!(config::load(&o).unwrap().keep_releases, 2); // the environment beats the package
}

#[test]
fn workspace_root_without_package_lists_the_candidates() {
    let (p, o) = workspace_opts(None, None);
    let err = config::load(&o).unwrap_err();
    let root = std::fs::canonicalize(&p.root).unwrap();
    let text = err
        .to_string()
        .replace(&root.display().to_string(), "<root>")
        .replace(&p.root.display().to_string(), "<root>");
    assert_eq!(text, "the workspace at <root> has several packages: `api`, `worker`; which one should be shipped?");
    assert_eq!(
        err.help().unwrap(),
        "pass `-p <package>`, e.g. `-p api`, or run from the package's directory"
    );

    let (_p, mut o) = workspace_opts(None, None);
    o.manifest_path = Some(_p.path("worker/Cargo.toml"));
    assert_eq!(config::load(&o).unwrap().package, "worker");
}

/// Issue #13: which packages a command at a workspace root acts on, and in which order.
#[test]
fn workspace_selection_follows_cargo_flags_and_the_order_key() {
    use cargo_ship::workspace::Selection;
    let (p, o) = workspace_opts(None, Some("staging"));
    let manifest = p.path("Cargo.toml");
    let names = |packages: &[&str], workspace: bool, exclude: &[&str]| {
        let packages: Vec<String> = packages.iter().map(|s| s.to_string()).collect();
        let exclude: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
        let sel = Selection {
            manifest_path: Some(&manifest),
            packages: &packages,
            workspace,
            exclude: &exclude,
        };
        config::load_selected(&sel, &o).map(|cs| {
            cs.iter()
                .map(|c| c.package.clone())
                .collect::<Vec<_>>()
                .join(",")
        })
    };
    // At the root: every member with a ship section, in `members` order.
    assert_eq!(names(&[], false, &[]).unwrap(), "api,worker");
    assert_eq!(names(&[], true, &["api"]).unwrap(), "worker");
    assert_eq!(names(&["worker", "api"], false, &[]).unwrap(), "api,worker");
    assert_eq!(names(&["worker"], false, &[]).unwrap(), "worker");
    // `order` puts the worker first.
    p.edit(
        "Cargo.toml",
        "[workspace.metadata.ship]\n",
        "[workspace.metadata.ship]\norder = [\"worker\"]\n",
    );
    assert_eq!(names(&[], false, &[]).unwrap(), "worker,api");
    let root = std::fs::canonicalize(&p.root).unwrap();
    let clean = |e: cargo_ship::Error| {
        e.to_string()
            .replace(&root.display().to_string(), "<root>")
            .replace(&p.root.display().to_string(), "<root>")
    };
    let err = names(&[], false, &["nope"]).unwrap_err();
    assert_eq!(err.help().unwrap(), "the members are: `api`, `worker`");
    assert_eq!(
        clean(err),
        "--exclude `nope`: no such package in the workspace at <root>"
    );
    p.edit("Cargo.toml", "order = [\"worker\"]", "order = [\"wrker\"]");
    let err = names(&[], false, &[]).unwrap_err();
    assert_eq!(
        clean(err),
        "<root>/Cargo.toml: `workspace.metadata.ship.order`: `wrker` is not a member of the workspace"
    );
    // Nothing to ship: no member has a ship section.
    p.edit("Cargo.toml", "order = [\"wrker\"]", "");
    p.edit(
        "worker/Cargo.toml",
        "[package.metadata.ship]",
        "[package.metadata.other]",
    );
    p.edit(
        "worker/Cargo.toml",
        "[package.metadata.ship.health]",
        "[package.metadata.other.health]",
    );
    let err = names(&[], true, &["api"]).unwrap_err();
    assert!(
        err.to_string()
            .contains("has a `[package.metadata.ship]` table (after --exclude)"),
        "{err}"
    );
    // `order` in a package is refused, pointing at it.
    p.edit(
        "api/Cargo.toml",
        "deploy_to = \"/srv/api\"",
        "order = [\"api\"]",
    );
    let err = clean(names(&["api"], false, &[]).unwrap_err());
    assert!(
        err.ends_with("`package.metadata.ship.order`: `order` (the order services of a workspace deploy switch in) belongs to the workspace"),
        "{err}"
    );
}

#[test]
fn workspace_errors_point_at_the_workspace_manifest() {
    let (p, o) = workspace_opts(Some("api"), None);
    p.edit("Cargo.toml", "keep_releases = 4", "keep_releases = -4");
    let err = config::load(&o).unwrap_err().to_string();
    assert!(err.ends_with("Cargo.toml:14:17: `workspace.metadata.ship.keep_releases`: expected at least 1, found -4"), "{err}");
    assert!(!err.contains("api/Cargo.toml"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Errors, word for word

#[test]
fn unknown_keys_suggest_and_list() {
    let (e, help) = error_with("[package.metadata.ship]\nkeep_release = 3\n", None);
    assert_eq!(e, "<p>/Cargo.toml:9:1: `package.metadata.ship.keep_release`: unknown key; did you mean `keep_releases`?");
    assert_eq!(
        help.unwrap(),
        "the keys allowed in `[package.metadata.ship]` are: `assets`, `bin`, `builder`, `canary`, `deploy_to`, `environments`, \
         `health`, `hooks`, `jobs`, `keep_releases`, `profile`, `shared_dirs`, `shared_files`, `strip`, `sudo`, `systemd`, `target`, `targets`"
    );
    assert_eq!(
        error("[package.metadata.ship.health]\nurl = \"http://x:1/\"\n"),
        "<p>/Cargo.toml:9:1: `package.metadata.ship.health.url`: unknown key"
    );
    assert_eq!(
        error("[package.metadata.ship.environments.prod]\nhosts = [\"a\"]\nparalel = 2\n"),
        "<p>/Cargo.toml:10:1: `package.metadata.ship.environments.prod.paralel`: unknown key; did you mean `parallel`?"
    );
    assert_eq!(
        error("[package.metadata.ship]\nhosts = [\"a\"]\n"),
        "<p>/Cargo.toml:9:1: `package.metadata.ship.hosts`: this key belongs to an environment"
    );
}

#[test]
fn wrong_types_and_ranges() {
    assert_eq!(
        error("[package.metadata.ship]\nkeep_releases = \"five\"\n"),
        "<p>/Cargo.toml:9:17: `package.metadata.ship.keep_releases`: expected a non-negative integer, found a string (\"five\")"
    );
    assert_eq!(
        error("[package.metadata.ship]\nkeep_releases = 0\n"),
        "<p>/Cargo.toml:9:17: `package.metadata.ship.keep_releases`: expected at least 1, found 0"
    );
    assert_eq!(
        error("[package.metadata.ship]\nstrip = \"yes\"\n"),
        "<p>/Cargo.toml:9:9: `package.metadata.ship.strip`: expected a boolean (true or false), found a string (\"yes\")"
    );
    assert_eq!(
        error("[package.metadata.ship]\nsystemd = \"hello\"\n"),
        "<p>/Cargo.toml:9:11: `package.metadata.ship.systemd`: expected a table, found a string (\"hello\")"
    );
    assert_eq!(
        error("[package.metadata.ship.systemd]\nenvironment = { PORT = 8080 }\n"),
        "<p>/Cargo.toml:9:24: `package.metadata.ship.systemd.environment.PORT`: \
         expected a string (quote numbers and booleans), found an integer (8080)"
    );
}

#[test]
fn bad_durations() {
    assert_eq!(
        error("[package.metadata.ship.health]\ntimeout = \"soon\"\n"),
        "<p>/Cargo.toml:9:11: `package.metadata.ship.health.timeout`: expected a duration like \"30s\", \"2m\" or \"1m 30s\", found \"soon\""
    );
    assert_eq!(
        error("[package.metadata.ship.systemd]\nrestart_sec = 5\n"),
        "<p>/Cargo.toml:9:15: `package.metadata.ship.systemd.restart_sec`: expected a duration like \"30s\", \"2m\" or \"1m 30s\", found an integer (5)"
    );
}

#[test]
fn bad_host_specs() {
    let cases = [
        ("user@", "the host is missing"),
        ("host:99999", "the port is out of range (1-65535)"),
        ("host:abc", "the port is not a number"),
        ("a b", "it contains whitespace"),
        ("", "it is empty"),
        (
            "-oProxyCommand=sh",
            "the host may only contain letters, digits and `_.-`",
        ),
    ];
    for (host, why) in cases {
        let (e, _) = error_with(
            &format!("[package.metadata.ship.environments.prod]\nhosts = [\"ok\", \"{host}\"]\n"),
            Some("prod"),
        );
        assert_eq!(
            e,
            format!(
                "<p>/Cargo.toml:9:16: `package.metadata.ship.environments.prod.hosts[1]`: \
                 expected `[user@]host[:port]`, found \"{host}\": {why}"
            )
        );
    }
    let (e, _) = error_with(
        "[package.metadata.ship.environments.prod]\nhosts = [\"a\", \"a\"]\n",
        Some("prod"),
    );
    assert!(e.ends_with("`package.metadata.ship.environments.prod.hosts[1]`: expected each host once, found \"a\" twice"), "{e}");
}

#[test]
fn unsafe_paths() {
    let deploy = |v: &str, found: &str| {
        assert_eq!(
            error(&format!("[package.metadata.ship]\ndeploy_to = \"{v}\"\n")),
            format!(
                "<p>/Cargo.toml:9:13: `package.metadata.ship.deploy_to`: expected an absolute path like \"/opt/hello\" \
                 (letters, digits, `._-+@~=,`), found {found}: \"{v}\""
            )
        )
    };
    deploy("opt/hello", "a relative path");
    deploy("/opt/../etc/hello", "a `.` or `..` component");
    deploy("/", "the root directory");
    deploy("/opt/hello;", "the character ';'");
    deploy("/opt/hello ", "the character ' '");
    deploy("/usr", "a system directory");

    assert_eq!(
        error("[package.metadata.ship]\nassets = [\"static\", \"../secrets\"]\n"),
        "<p>/Cargo.toml:9:21: `package.metadata.ship.assets[1]`: expected a relative path inside the package (no `..`), \
         found a path with `..`: \"../secrets\""
    );
    assert_eq!(
        error("[package.metadata.ship]\nshared_dirs = [\"/var/data\"]\n"),
        "<p>/Cargo.toml:9:16: `package.metadata.ship.shared_dirs[0]`: expected a relative path inside the release (no `..`), \
         found an absolute path: \"/var/data\""
    );
    assert_eq!(
        error("[package.metadata.ship]\nshared_files = [\"config/../../x\"]\n"),
        "<p>/Cargo.toml:9:17: `package.metadata.ship.shared_files[0]`: expected a relative path inside the release (no `..`), \
         found a path with `..`: \"config/../../x\""
    );
}

#[test]
fn shared_paths_do_not_collide_with_the_release() {
    assert_eq!(
        error("[package.metadata.ship]\nshared_files = [\"hello\"]\n"),
        "<p>/Cargo.toml:9:17: `package.metadata.ship.shared_files[0]`: expected a path that is not the release's own binary `hello`, found \"hello\""
    );
    assert_eq!(
        error("[package.metadata.ship]\nshared_files = [\"SHIP_MANIFEST.json\"]\n"),
        "<p>/Cargo.toml:9:17: `package.metadata.ship.shared_files[0]`: expected a path that is not the release's own `SHIP_MANIFEST.json`, found \"SHIP_MANIFEST.json\""
    );
    assert_eq!(
        error("[package.metadata.ship]\nassets = [\"static\"]\nshared_dirs = [\"static/uploads\"]\n"),
        "<p>/Cargo.toml:10:16: `package.metadata.ship.shared_dirs[0]`: expected a path that no asset provides, \
         found \"static/uploads\", which overlaps the asset \"static\""
    );
    assert_eq!(
        error("[package.metadata.ship]\nshared_dirs = [\"data\"]\nshared_files = [\"data/db\"]\n"),
        "<p>/Cargo.toml:10:17: `package.metadata.ship.shared_files[0]`: expected each shared path once, \
         found \"data/db\", which overlaps \"data\" (`package.metadata.ship.shared_dirs[0]`)"
    );
}

#[test]
fn health_http_must_be_plain_http_with_host_and_port() {
    let (e, help) = error_with(
        "[package.metadata.ship.health]\nhttp = \"https://127.0.0.1:8443/healthz\"\n",
        None,
    );
    assert_eq!(
        e,
        "<p>/Cargo.toml:9:8: `package.metadata.ship.health.http`: expected a URL like \"http://127.0.0.1:8080/healthz\" \
         (http://, a host and a port), found \"https://127.0.0.1:8443/healthz\": https is not supported"
    );
    assert!(help.unwrap().contains("through the ssh connection"));
    assert!(
        error("[package.metadata.ship.health]\nhttp = \"http://localhost/healthz\"\n")
            .ends_with(": the port is missing")
    );
    assert!(
        error("[package.metadata.ship.health]\nhttp = \"127.0.0.1:8080\"\n")
            .ends_with("(http://, a host and a port), found \"127.0.0.1:8080\"")
    );
}

#[test]
fn builder_and_target() {
    let (e, help) = error_with("[package.metadata.ship]\nbuilder = \"zig\"\n", None);
    assert_eq!(
        e,
        "<p>/Cargo.toml:9:11: `package.metadata.ship.builder`: expected one of \"auto\", \"cargo\", \"zigbuild\", \"cross\", found \"zig\""
    );
    assert_eq!(help, None);
    let (_, help) = error_with("[package.metadata.ship]\nbuilder = \"crosss\"\n", None);
    assert_eq!(help.as_deref(), Some("did you mean \"cross\"?"));
    assert_eq!(
        error("[package.metadata.ship]\ntarget = \"x86_64-linux\"\n"),
        "<p>/Cargo.toml:9:10: `package.metadata.ship.target`: expected a target triple like `x86_64-unknown-linux-gnu`, found `x86_64-linux`"
    );
    assert_eq!(
        error("[package.metadata.ship]\ntarget = \"x86_64-unknown-linux-gnu.2.17\"\nbuilder = \"cargo\"\n"),
        "<p>/Cargo.toml:10:11: `package.metadata.ship.builder`: expected \"zigbuild\" or \"auto\" with a glibc-pinned target \
         (`x86_64-unknown-linux-gnu.2.17`), found \"cargo\""
    );
    assert_eq!(
        error("[package.metadata.ship]\nbin = \"nope\"\n"),
        "<p>/Cargo.toml:9:7: `package.metadata.ship.bin`: expected one of the binaries of package `hello` (`hello`), found \"nope\""
    );
}

#[test]
fn missing_and_empty_environments() {
    let ship = "[package.metadata.ship.environments.prod]\nhosts = [\"a\"]\n[package.metadata.ship.environments.staging]\nhosts = [\"b\"]\n";
    let (e, help) = error_with(ship, Some("stagin"));
    assert_eq!(e, "no environment `stagin` in the ship configuration of package `hello`; configured: `prod`, `staging`");
    assert_eq!(help.as_deref(), Some("did you mean `staging`?"));

    let (e, help) = error_with("[package.metadata.ship]\n", Some("prod"));
    assert_eq!(
        e,
        "no environment `prod`: package `hello` has no environments configured"
    );
    assert_eq!(
        help.unwrap(),
        "add one to <p>/Cargo.toml:\n\n    [package.metadata.ship.environments.prod]\n    hosts = [\"deploy@web1.example.com\"]"
    );

    let (e, help) = error_with(
        "[package.metadata.ship.environments.prod]\nparallel = 2\n",
        Some("prod"),
    );
    assert_eq!(e, "<p>/Cargo.toml:8:1: `package.metadata.ship.environments.prod.hosts`: missing: environment `prod` has no hosts");
    assert_eq!(help.unwrap(), "add `hosts = [\"deploy@web1.example.com\"]` to `[package.metadata.ship.environments.prod]`");
    let (e, _) = error_with(
        "[package.metadata.ship.environments.prod]\nhosts = []\n",
        Some("prod"),
    );
    assert_eq!(
        e,
        "<p>/Cargo.toml:9:9: `package.metadata.ship.environments.prod.hosts`: expected at least one host like \"deploy@web1.example.com\", found an empty array"
    );
}

#[test]
fn parallel_and_batch() {
    let env = |extra: &str| {
        error_with(
            &format!("[package.metadata.ship.environments.prod]\nhosts = [\"a\"]\n{extra}\n"),
            Some("prod"),
        )
        .0
    };
    assert_eq!(
        env("parallel = 0"),
        "<p>/Cargo.toml:10:12: `package.metadata.ship.environments.prod.parallel`: expected at least 1, found 0"
    );
    for (batch, found) in [
        ("\"0\"", "\"0\""),
        ("\"150%\"", "\"150%\""),
        ("\"abc\"", "\"abc\""),
        ("0", "0"),
    ] {
        assert_eq!(
            env(&format!("batch = {batch}")),
            format!(
                "<p>/Cargo.toml:10:9: `package.metadata.ship.environments.prod.batch`: expected a number of hosts (at least 1), \
                 a percentage from \"1%\" to \"100%\", or \"all\", found {found}"
            )
        );
    }
}

/// #18 item 1 and #19: `connect_parallel`, `parallel = "all"`, ramps, `pause`, `max_fail`,
/// `unreachable`, resolved and refused with the key and what was expected.
#[test]
fn issue_19_ramp_pause_budget_and_unreachable() {
    let p = Project::fixture("hello");
    p.write("ssh_config", "Host demo1\n");
    p.edit(
        "Cargo.toml",
        "ssh_config = \"../../target/ship-demo/ssh_config\"",
        "ssh_config = \"ssh_config\"",
    );
    p.edit(
        "Cargo.toml",
        "[package.metadata.ship.environments.demo]",
        "[package.metadata.ship.environments.demo]\nconnect_parallel = 4\nparallel = \"all\"\nbatch = [1, \"10%\", \"50%\", \"100%\"]\npause = \"30s\"\nmax_fail = \"5%\"\nunreachable = \"defer\"",
    );
    let c = load(&p, Some("demo"));
    let env = c.environment.as_ref().unwrap();
    assert_eq!(env.connect_parallel, 4);
    assert_eq!(env.parallel, None);
    assert_eq!(
        env.batch,
        [
            Batch::Count(1),
            Batch::Percent(10),
            Batch::Percent(50),
            Batch::Percent(100)
        ]
    );
    assert_eq!(env.batch_sizes(100), [1, 10, 50, 39]);
    assert_eq!(env.pause, std::time::Duration::from_secs(30));
    assert_eq!(env.max_fail, cargo_ship::config::Budget::Percent(5));
    assert_eq!(env.unreachable, cargo_ship::config::Unreachable::Defer);
    let (text, json) = config::show(&c);
    assert!(
        text.lines()
            .any(|l| l == "batch = [1, \"10%\", \"50%\", \"100%\"]"),
        "{text}"
    );
    assert_eq!(json["environment"]["parallel"], "all");
    assert_eq!(json["environment"]["max_fail"], "5%");
    assert_eq!(json["environment"]["unreachable"], "defer");

    let env = |extra: &str| {
        error_with(
            &format!("[package.metadata.ship.environments.prod]\nhosts = [\"a\"]\n{extra}\n"),
            Some("prod"),
        )
        .0
    };
    assert_eq!(
        env("batch = [1, \"0%\"]"),
        "<p>/Cargo.toml:10:9: `package.metadata.ship.environments.prod.batch`: expected a number of hosts (at least 1), \
         a percentage from \"1%\" to \"100%\", or \"all\", found \"0%\" in the ramp"
    );
    assert_eq!(
        env("batch = []"),
        "<p>/Cargo.toml:10:9: `package.metadata.ship.environments.prod.batch`: expected a number of hosts, a percentage like \"25%\", or a ramp like [1, \"10%\", \"100%\"], found an array ([])"
    );
    assert_eq!(
        env("parallel = \"some\""),
        "<p>/Cargo.toml:10:12: `package.metadata.ship.environments.prod.parallel`: expected a positive integer or \"all\", found \"some\""
    );
    assert_eq!(
        env("connect_parallel = 0"),
        "<p>/Cargo.toml:10:20: `package.metadata.ship.environments.prod.connect_parallel`: expected at least 1, found 0"
    );
    assert_eq!(
        env("max_fail = \"101%\""),
        "<p>/Cargo.toml:10:12: `package.metadata.ship.environments.prod.max_fail`: expected a number of hosts (0 or more) or a percentage from \"0%\" to \"100%\", found \"101%\""
    );
    assert_eq!(
        env("unreachable = \"skip\""),
        "<p>/Cargo.toml:10:15: `package.metadata.ship.environments.prod.unreachable`: expected \"fail\" or \"defer\", found \"skip\""
    );
    assert_eq!(
        env("pause = \"soon\""),
        "<p>/Cargo.toml:10:9: `package.metadata.ship.environments.prod.pause`: expected a duration like \"30s\", \"2m\" or \"1m 30s\", found \"soon\""
    );
}

#[test]
fn unit_names_and_environment_variables() {
    assert_eq!(
        error("[package.metadata.ship.systemd]\nunit = \"my/unit\"\n"),
        "<p>/Cargo.toml:9:8: `package.metadata.ship.systemd.unit`: expected a unit name of letters, digits and `_.:-` (no `/` or spaces), found \"my/unit\""
    );
    assert!(
        error("[package.metadata.ship.systemd]\nunit = \"my unit\"\n")
            .ends_with("found \"my unit\"")
    );
    assert_eq!(
        error("[package.metadata.ship.systemd]\nenvironment = { \"1BAD\" = \"x\" }\n"),
        "<p>/Cargo.toml:9:17: `package.metadata.ship.systemd.environment.1BAD`: expected an environment variable name matching [A-Za-z_][A-Za-z0-9_]*, found `1BAD`"
    );
    assert!(
        error("[package.metadata.ship.systemd]\nenvironment = { \"A-B\" = \"x\" }\n")
            .ends_with("found `A-B`")
    );
}

#[test]
fn ssh_config_must_exist() {
    let (e, help) = error_with(
        "[package.metadata.ship.environments.prod]\nhosts = [\"a\"]\nssh_config = \"deploy/ssh_config\"\n",
        Some("prod"),
    );
    assert_eq!(
        e,
        "<p>/Cargo.toml:10:14: `package.metadata.ship.environments.prod.ssh_config`: the ssh config file `<p>/deploy/ssh_config` does not exist"
    );
    assert_eq!(
        help.unwrap(),
        "`ssh_config` is relative to the directory of the Cargo.toml that sets it"
    );
}

#[test]
fn toml_syntax_errors_are_reported() {
    let p = hello("[package.metadata.ship\n");
    let err = config::load(&opts(&p, None)).unwrap_err();
    assert!(err.to_string().contains("Cargo.toml"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// config show

#[test]
fn show_renders_text_and_json() {
    let p = Project::fixture("hello");
    p.write("ssh_config", "Host demo1\n");
    p.edit(
        "Cargo.toml",
        "ssh_config = \"../../target/ship-demo/ssh_config\"",
        "ssh_config = \"ssh_config\"",
    );
    let c = load(&p, Some("demo"));
    let (text, json) = config::show(&c);
    assert!(
        text.starts_with("# resolved ship configuration of `hello` 0.1.0 ("),
        "{text}"
    );
    assert!(text.contains("environment `demo`\n"), "{text}");
    for line in [
        "deploy_to = \"/opt/hello\"",
        "keep_releases = 3",
        "[systemd]",
        "restart_sec = \"1s\"",
        "[health]",
        "timeout = \"20s\"",
        "[environment]",
        "hosts = [\"root@demo1\"]",
        "batch = \"all\"",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert_eq!(json["bin"], "hello");
    assert_eq!(json["keep_releases"], 3);
    assert_eq!(json["health"]["http"], "http://127.0.0.1:8080/healthz");
    assert_eq!(json["systemd"]["environment"]["RUST_LOG"], "info");
    assert_eq!(json["environment"]["hosts"][0], "root@demo1");
    // #18: handshakes and work are two limits; by default every connected host works at once.
    assert_eq!(json["environment"]["connect_parallel"], 10);
    assert_eq!(json["environment"]["parallel"], "all");
    assert_eq!(json["environment"]["max_fail"], 0);
    assert_eq!(json["environment"]["unreachable"], "fail");
    assert_eq!(json["environment"]["pause"], "0s");
}

#[test]
fn config_show_through_the_binary() {
    let p = Project::fixture("hello");
    p.write("ssh_config", "Host demo1\n");
    p.edit(
        "Cargo.toml",
        "ssh_config = \"../../target/ship-demo/ssh_config\"",
        "ssh_config = \"ssh_config\"",
    );
    let out = p.ship().args(["config", "show", "demo"]).output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(all.contains("deploy_to = \"/opt/hello\""), "{all}");
    assert!(all.contains("root@demo1"), "{all}");

    p.edit("Cargo.toml", "keep_releases = 3", "keep_releases = 0");
    let out = p.ship().args(["config", "show", "demo"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Cargo.toml:"), "{stderr}");
    assert!(
        stderr.contains("`package.metadata.ship.keep_releases`: expected at least 1, found 0"),
        "{stderr}"
    );
}

#[test]
fn repository_fixtures_load() {
    let hello = repo_root().join("fixtures/hello/Cargo.toml");
    let c = config::load(&LoadOptions {
        manifest_path: Some(hello),
        ..LoadOptions::default()
    })
    .unwrap();
    assert_eq!(c.assets, ["config/default.toml", "static"]);
    assert!(Path::new(&c.deploy_to).is_absolute());
}

/// Every `fixtures/configs/*.toml` sample gives the error written in its `# error:` line.
#[test]
fn bad_config_samples() {
    let dir = repo_root().join("fixtures/configs");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "samples in {}", dir.display());
    let mut mismatches = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let line = |tag: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(tag))
                .map(str::to_string)
        };
        let expected = line("# error: ").expect("an `# error:` line");
        let (got, help) = error_with(&text, line("# env: ").as_deref());
        if got != expected {
            mismatches.push(format!(
                "{}:\n  expected {expected}\n  got      {got}",
                file.display()
            ));
        }
        if let Some(want) = line("# help: ") {
            if help.as_deref() != Some(want.as_str()) {
                mismatches.push(format!(
                    "{}:\n  expected help {want}\n  got help      {help:?}",
                    file.display()
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// Issue #7: the restart strategy keys and the dead-man's switch, with their exact errors.
#[test]
fn restart_strategies_and_the_dead_mans_switch() {
    let sd = "[package.metadata.ship.systemd]\n";
    assert_eq!(
        error(&format!("{sd}restart = \"reload\"\n")),
        "<p>/Cargo.toml:9:11: `package.metadata.ship.systemd.restart`: expected one of \"restart\", \"socket\", \"blue-green\", found \"reload\""
    );
    let (e, help) = error_with(&format!("{sd}restart = \"socket\"\n"), None);
    assert_eq!(
        e,
        "<p>/Cargo.toml:9:11: `package.metadata.ship.systemd.restart`: restart = \"socket\" needs the sockets systemd holds for the service, but `systemd.listen` is empty"
    );
    assert_eq!(
        help.as_deref(),
        Some("add e.g. `listen = [\"0.0.0.0:8080\"]` under [package.metadata.ship.systemd]")
    );
    let (e, help) = error_with(&format!("{sd}listen = [\"8080\"]\n"), None);
    assert_eq!(
        e,
        "<p>/Cargo.toml:9:10: `package.metadata.ship.systemd.listen`: `listen` is only used by restart = \"socket\" or \"blue-green\", but restart is \"restart\""
    );
    assert!(help.unwrap().starts_with("set `restart = \"socket\"`"));
    assert_eq!(
        error(&format!(
            "{sd}restart = \"blue-green\"\nlisten = [\"0.0.0.0:80800\"]\n"
        )),
        "<p>/Cargo.toml:10:11: `package.metadata.ship.systemd.listen[0]`: expected a port, an \"address:port\" (\"0.0.0.0:8080\", \"[::]:8080\") or an absolute socket path, found \"0.0.0.0:80800\""
    );
    assert_eq!(
        error("[package.metadata.ship.health]\ntimeout = \"10s\"\nsettle = \"2s\"\nconfirm_timeout = \"15s\"\n"),
        "<p>/Cargo.toml:11:19: `package.metadata.ship.health.confirm_timeout`: expected at least 17s (health.timeout + health.settle + 5s, so the checks fit before the host reverts by itself), or \"0s\" to turn the dead-man's switch off, found \"15s\""
    );
    let p = hello(&format!(
        "{sd}restart = \"blue-green\"\nlisten = [\"0.0.0.0:8080\", \"[::]:9090\", \"/run/hello.sock\"]\nnotify = true\ndrain_timeout = \"5s\"\n\
         [package.metadata.ship.health]\nconfirm_timeout = \"0s\"\n"
    ));
    let c = load(&p, None);
    assert_eq!(
        c.systemd.restart,
        cargo_ship::config::RestartStrategy::BlueGreen
    );
    assert_eq!(c.systemd.listen.len(), 3);
    assert!(c.systemd.notify);
    assert_eq!(c.systemd.drain_timeout, Duration::from_secs(5));
    assert!(c.health.confirm_timeout.is_zero());
    // The default fits the checks: 90s, or 2 x timeout + settle + 10s when that is longer.
    let c = load(
        &hello("[package.metadata.ship.health]\ntimeout = \"60s\"\n"),
        None,
    );
    assert_eq!(c.health.confirm_timeout, Duration::from_secs(133));
}

/// Issue #9: secret names are validated and never also plain `environment` values; a
/// `secrets_file` must exist.
#[test]
fn secrets_keys() {
    let sd = "[package.metadata.ship.systemd]\n";
    assert_eq!(
        error(&format!("{sd}secrets = [\"DATABASE-URL\"]\n")),
        "<p>/Cargo.toml:9:12: `package.metadata.ship.systemd.secrets[0]`: expected an environment variable name matching [A-Za-z_][A-Za-z0-9_]*, found \"DATABASE-URL\""
    );
    let (e, help) = error_with(
        &format!("{sd}environment = {{ API_TOKEN = \"x\" }}\nsecrets = [\"API_TOKEN\"]\n"),
        None,
    );
    assert_eq!(
        e,
        "<p>/Cargo.toml:10:12: `package.metadata.ship.systemd.secrets[0]`: `API_TOKEN` is both a secret and a value in `systemd.environment`"
    );
    assert!(help
        .unwrap()
        .starts_with("values in `environment` live in Cargo.toml"));
    let (e, _) = error_with(
        "[package.metadata.ship.environments.prod]\nhosts = [\"web1\"]\nsecrets_file = \"deploy/prod.env\"\n",
        Some("prod"),
    );
    assert_eq!(
        e,
        "<p>/Cargo.toml:10:16: `package.metadata.ship.environments.prod.secrets_file`: the secrets file `<p>/deploy/prod.env` does not exist"
    );
    assert!(error("[package.metadata.ship]\nsecrets_file = \"x.env\"\n").contains("secrets_file"));
}

/// Issue #12: `targets = [...]` (one per host architecture) for an environment whose hosts
/// differ; `target` and `targets` are one setting, so an environment's `targets` replaces the
/// package's `target`, and `--target` replaces both.
#[test]
fn issue_12_targets_one_per_architecture() {
    let p = hello(
        "[package.metadata.ship]\ntarget = \"x86_64-unknown-linux-gnu\"\n\
         [package.metadata.ship.environments.mixed]\nhosts = [\"a\", \"b\"]\n\
         targets = [\"x86_64-unknown-linux-gnu.2.17\", \"aarch64-unknown-linux-musl\"]\n",
    );
    let c = load(&p, Some("mixed"));
    let names: Vec<String> = c.targets.iter().map(|t| t.to_string()).collect();
    assert_eq!(
        names,
        [
            "x86_64-unknown-linux-gnu.2.17",
            "aarch64-unknown-linux-musl"
        ]
    );
    assert_eq!(c.target.to_string(), "x86_64-unknown-linux-gnu.2.17");
    let single = load(&p, None);
    assert_eq!(single.targets.len(), 1);
    assert_eq!(single.targets[0].to_string(), "x86_64-unknown-linux-gnu");
    let mut o = opts(&p, Some("mixed"));
    o.target = Some("aarch64-unknown-linux-gnu".into());
    let flagged = config::load(&o).unwrap();
    assert_eq!(flagged.targets.len(), 1);
    assert_eq!(flagged.target.to_string(), "aarch64-unknown-linux-gnu");

    let (e, help) = error_with(
        "[package.metadata.ship]\ntarget = \"x86_64-unknown-linux-gnu\"\n\
         targets = [\"aarch64-unknown-linux-gnu\"]\n",
        None,
    );
    assert_eq!(
        e,
        "<p>/Cargo.toml:10:11: `package.metadata.ship.targets`: set either `target` (one) or \
         `targets` (one per host architecture), not both"
    );
    assert_eq!(
        help.as_deref(),
        Some("for an environment whose hosts differ in architecture keep `targets` and remove `target`")
    );
    assert_eq!(
        error(
            "[package.metadata.ship]\ntargets = [\"x86_64-unknown-linux-gnu\", \
             \"x86_64-unknown-linux-musl\"]\n"
        ),
        "<p>/Cargo.toml:9:40: `package.metadata.ship.targets[1]`: expected one target per host \
         architecture, found `x86_64-unknown-linux-gnu` and `x86_64-unknown-linux-musl`, which \
         both run on x86_64"
    );
    assert_eq!(
        error("[package.metadata.ship]\ntargets = []\n"),
        "<p>/Cargo.toml:9:11: `package.metadata.ship.targets`: expected at least one target \
         triple, found an empty array"
    );
    assert_eq!(
        error("[package.metadata.ship]\ntargets = [\"aarch64\"]\n"),
        "<p>/Cargo.toml:9:12: `package.metadata.ship.targets[0]`: expected a target triple like \
         `x86_64-unknown-linux-gnu`, found `aarch64`"
    );
}

/// Issue #11: `[...environments.<env>.per_host."<host>"]` overrides reach only that host,
/// merged like an environment's; `hooks.once_on` names the host of before_switch_once.
#[test]
fn issue_11_per_host_overrides_and_once_on() {
    let p = hello(
        "[package.metadata.ship]\n\
         [package.metadata.ship.systemd]\nargs = [\"--port\", \"8080\"]\nenvironment = { A = \"1\", B = \"2\" }\n\
         [package.metadata.ship.hooks]\nbefore_switch_once = [\"./hello migrate\"]\nonce_on = \"deploy@web2:2222\"\n\
         [package.metadata.ship.environments.prod]\nhosts = [\"web1\", \"deploy@web2:2222\"]\n\
         [package.metadata.ship.environments.prod.per_host.\"deploy@web2:2222\".systemd]\nargs = [\"--port\", \"9090\"]\nenvironment = { B = \"two\" }\n",
    );
    let c = load(&p, Some("prod"));
    let web1 = c.for_host("web1");
    assert_eq!(web1.systemd.args, ["--port", "8080"]);
    let web2 = c.for_host("deploy@web2:2222");
    assert_eq!(web2.systemd.args, ["--port", "9090"]);
    assert_eq!(web2.systemd.environment["A"], "1");
    assert_eq!(web2.systemd.environment["B"], "two");
    assert_eq!(c.systemd.environment["B"], "2");
    assert_eq!(c.hooks.once_on.as_deref(), Some("deploy@web2:2222"));
    assert_eq!(web2.hooks.once_on.as_deref(), Some("deploy@web2:2222"));
}

#[test]
fn issue_11_per_host_errors() {
    let env = "[package.metadata.ship.environments.prod]\nhosts = [\"web1\", \"web2\"]\n";
    let (msg, help) = error_with(
        &format!("{env}[package.metadata.ship.environments.prod.per_host.web9.systemd]\nargs = [\"x\"]\n"),
        Some("prod"),
    );
    assert_eq!(
        msg,
        "<p>/Cargo.toml:10:51: `package.metadata.ship.environments.prod.per_host.web9`: `web9` is not a host of environment `prod`"
    );
    assert_eq!(
        help.unwrap(),
        "write the host exactly as in `hosts`: web1, web2"
    );
    let (msg, _) = error_with(
        &format!("{env}[package.metadata.ship.environments.prod.per_host.web2]\nhosts = [\"x\"]\n"),
        Some("prod"),
    );
    assert_eq!(
        msg,
        "<p>/Cargo.toml:11:1: `package.metadata.ship.environments.prod.per_host.web2.hosts`: this key applies to the whole environment; it cannot be set per host"
    );
    let (msg, _) = error_with(
        &format!("[package.metadata.ship.hooks]\nonce_on = \"web3\"\n{env}"),
        Some("prod"),
    );
    assert_eq!(
        msg,
        "<p>/Cargo.toml:9:11: `package.metadata.ship.hooks.once_on`: `web3` is not a host of environment `prod`"
    );
    let (msg, _) = error_with(
        &format!("{env}[package.metadata.ship.environments.prod.per_host.web2]\ndeploy_to = \"/srv/x\"\n"),
        Some("prod"),
    );
    assert_eq!(
        msg,
        "<p>/Cargo.toml:11:13: `package.metadata.ship.environments.prod.per_host.web2.deploy_to`: deploy_to cannot differ between the hosts of an environment (the deploy lock and the releases live there)"
    );
}

/// Issue #13: two services of a workspace deploy on one host cannot share a directory.
#[test]
fn workspace_deploy_refuses_two_services_in_one_directory() {
    let p = Project::fixture("workspace-two");
    p.edit(
        "worker/Cargo.toml",
        "keep_releases = 8",
        "keep_releases = 8\ndeploy_to = \"/srv/api\"",
    );
    let out = p.ship().args(["deploy", "staging"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: packages `api` and `worker` both run on deploy@staging1.example.com with the same deploy_to /srv/api\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("help: give each service its own `deploy_to` and `systemd.unit`"),
        "{stderr}"
    );
}

/// Issue #20: `[package.metadata.ship.canary]`, its defaults, an environment turning it off,
/// and the exact text of every error.
#[test]
fn issue_20_canary_keys() {
    use cargo_ship::config::CanaryHosts;
    let c = load(
        &hello(
            "[package.metadata.ship.canary]\nmetrics = \"http://127.0.0.1:7070/metrics\"\nrequests = \"http_requests_total\"\nerrors = 'http_requests_total{code=~\"5..\"}'\n\
             [package.metadata.ship.environments.prod]\nhosts = [\"a\", \"b\"]\ncanary.hosts = \"50%\"\ncanary.window = \"10s\"\n\
             [package.metadata.ship.environments.staging]\nhosts = [\"s\"]\ncanary.enabled = false\n",
        ),
        Some("prod"),
    );
    let k = c.canary.expect("canary");
    assert_eq!(k.hosts, CanaryHosts::Percent(50));
    assert_eq!(k.window, Duration::from_secs(10));
    assert_eq!(k.metrics, "http://127.0.0.1:7070/metrics");
    assert_eq!(k.errors, "http_requests_total{code=~\"5..\"}");
    assert_eq!((k.max_error_ratio, k.min_requests), (0.01, 100));
    assert_eq!(CanaryHosts::Percent(10).count(25), 3);
    assert_eq!(CanaryHosts::Count(3).count(2), 2);
    let p = hello(
        "[package.metadata.ship.canary]\nmetrics = \"http://127.0.0.1:7070/metrics\"\nrequests = \"r\"\nerrors = \"e\"\nhosts = 2\nwindow = \"2m\"\nmax_error_ratio = 0\nmin_requests = 5\n\
         [package.metadata.ship.environments.staging]\nhosts = [\"s\"]\ncanary.enabled = false\n",
    );
    let k = load(&p, None).canary.expect("canary");
    assert_eq!(
        (k.hosts, k.window, k.max_error_ratio, k.min_requests),
        (CanaryHosts::Count(2), Duration::from_secs(120), 0.0, 5)
    );
    assert!(load(&p, Some("staging")).canary.is_none());
    // `config show` shows the table with its defaults filled in.
    let (text, json) = config::show(&load(&p, None));
    assert!(
        text.contains("[canary]\nhosts = 2\nwindow = \"2m\"\nmetrics = \"http://127.0.0.1:7070/metrics\"\nrequests = \"r\"\nerrors = \"e\"\nmax_error_ratio = 0.0\nmin_requests = 5\n"),
        "{text}"
    );
    assert_eq!(json["canary"]["min_requests"], 5);
    assert!(config::show(&load(&p, Some("staging")))
        .1
        .get("canary")
        .is_none());

    let base = "[package.metadata.ship.canary]\nmetrics = \"http://127.0.0.1:7070/metrics\"\nrequests = \"r\"\nerrors = \"e\"\n";
    let (e, help) = error_with(
        "[package.metadata.ship.canary]\nrequests = \"r\"\nerrors = \"e\"\n",
        None,
    );
    assert_eq!(
        e,
        "<p>/Cargo.toml:8:1: `package.metadata.ship.canary.metrics`: missing: a canary is judged on the service's own metrics"
    );
    assert_eq!(
        help.as_deref(),
        Some("add `metrics = \"http://127.0.0.1:7070/metrics\"` to `[package.metadata.ship.canary]`, or `enabled = false` to turn the canary off")
    );
    assert_eq!(
        error("[package.metadata.ship.canary]\nmetrics = \"http://127.0.0.1:7070/metrics\"\nrequests = \"r\"\n"),
        "<p>/Cargo.toml:8:1: `package.metadata.ship.canary.errors`: missing: a canary is judged on the service's own metrics"
    );
    for (extra, expected) in [
        (
            "hosts = 0",
            "<p>/Cargo.toml:12:9: `package.metadata.ship.canary.hosts`: expected a number of hosts (at least 1) or a percentage from \"1%\" to \"100%\", found 0",
        ),
        (
            "hosts = \"all\"",
            "<p>/Cargo.toml:12:9: `package.metadata.ship.canary.hosts`: expected a number of hosts (at least 1) or a percentage from \"1%\" to \"100%\", found \"all\"",
        ),
        (
            "hosts = true",
            "<p>/Cargo.toml:12:9: `package.metadata.ship.canary.hosts`: expected a number of hosts or a percentage like \"10%\", found a boolean (true)",
        ),
        (
            "window = \"soon\"",
            "<p>/Cargo.toml:12:10: `package.metadata.ship.canary.window`: expected a duration like \"30s\", \"2m\" or \"1m 30s\", found \"soon\"",
        ),
        (
            "window = \"0s\"",
            "<p>/Cargo.toml:12:10: `package.metadata.ship.canary.window`: expected a window of at least 1s, found \"0s\"",
        ),
        (
            "max_error_ratio = 1.5",
            "<p>/Cargo.toml:12:19: `package.metadata.ship.canary.max_error_ratio`: expected a ratio from 0 to 1 like 0.01, found 1.5",
        ),
        (
            "max_error_ratio = \"1%\"",
            "<p>/Cargo.toml:12:19: `package.metadata.ship.canary.max_error_ratio`: expected a ratio from 0 to 1 like 0.01, found a string (\"1%\")",
        ),
        (
            "min_requests = 0",
            "<p>/Cargo.toml:12:16: `package.metadata.ship.canary.min_requests`: expected at least 1, found 0",
        ),
        (
            "min_request = 5",
            "<p>/Cargo.toml:12:1: `package.metadata.ship.canary.min_request`: unknown key; did you mean `min_requests`?",
        ),
    ] {
        assert_eq!(error(&format!("{base}{extra}\n")), expected, "{extra}");
    }
    assert_eq!(
        error("[package.metadata.ship.canary]\nmetrics = \"https://127.0.0.1:7070/metrics\"\nrequests = \"r\"\nerrors = \"e\"\n"),
        "<p>/Cargo.toml:9:11: `package.metadata.ship.canary.metrics`: expected a URL like \"http://127.0.0.1:7070/metrics\" (http://, a host and a port), found \"https://127.0.0.1:7070/metrics\": https is not supported"
    );
    assert_eq!(
        error("[package.metadata.ship.canary]\nmetrics = \"http://127.0.0.1:7070/metrics\"\nrequests = \"rate(r[5m])\"\nerrors = \"e\"\n"),
        "<p>/Cargo.toml:10:12: `package.metadata.ship.canary.requests`: expected a series selector like `http_requests_total{code=~\"5..\"}`, found \"rate(r[5m])\": unexpected `(` after the selector (only a name and {label matchers} are allowed, no functions or ranges)"
    );
    assert_eq!(
        error("[package.metadata.ship.canary]\nmetrics = \"http://127.0.0.1:7070/metrics\"\nrequests = \"r\"\nerrors = 'r{code~\"5..\"}'\n"),
        "<p>/Cargo.toml:11:10: `package.metadata.ship.canary.errors`: expected a series selector like `http_requests_total{code=~\"5..\"}`, found \"r{code~\"5..\"}\": expected `=`, `!=`, `=~` or `!~` after the label `code`"
    );
    let (e, help) = error_with(
        "[package.metadata.ship.environments.prod]\nhosts = [\"a\"]\nper_host.a.canary.hosts = 1\n",
        Some("prod"),
    );
    assert_eq!(
        e,
        "<p>/Cargo.toml:10:12: `package.metadata.ship.environments.prod.per_host.a.canary`: this key applies to the whole environment; it cannot be set per host"
    );
    assert_eq!(
        help.as_deref(),
        Some("move it to `[package.metadata.ship.environments.prod]`")
    );
}

/// Issue #18: what `cargo metadata` said is reused while its inputs stay as they were, and a
/// new binary (a file appearing in `src/bin`) or a version bump is seen at once.
#[test]
fn the_workspace_description_follows_new_binaries_and_versions() {
    let p = Project::fixture("hello");
    p.write("ssh_config", "Host demo1\n");
    p.edit(
        "Cargo.toml",
        "ssh_config = \"../../target/ship-demo/ssh_config\"",
        "ssh_config = \"ssh_config\"",
    );
    p.edit("Cargo.toml", "bin = \"hello\"\n", "");
    let cache = p.dir.path().join("cache");
    let show = || {
        let out = p
            .ship()
            .args(["config", "show", "demo"])
            .env("XDG_CACHE_HOME", &cache)
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), all)
    };
    // Recorded at once, though Cargo.toml was written a moment ago (issue #18).
    for _ in 0..2 {
        let (code, all) = show();
        assert_eq!(code, Some(0), "{all}");
        assert!(all.contains("bin = \"hello\""), "{all}");
    }
    let records = std::fs::read_dir(cache.join("cargo-ship/metadata"))
        .unwrap()
        .count();
    assert_eq!(records, 1, "cargo metadata's answer was recorded");
    p.write("src/bin/second.rs", "fn main() {}\n");
    let (code, all) = show();
    assert_eq!(code, Some(3), "{all}");
    assert!(
        all.contains("package `hello` has several binaries (`hello`, `second`)"),
        "{all}"
    );
    std::fs::remove_file(p.path("src/bin/second.rs")).unwrap();
    p.set_version("0.7.0");
    let (code, all) = show();
    assert_eq!(code, Some(0), "{all}");
    assert!(all.contains("0.7.0"), "{all}");
}

/// Issue #21: `[package.metadata.ship.jobs.<name>]` errors name the file, the key and what
/// was expected.
#[test]
fn issue_21_job_config_errors() {
    let cases = [
        (
            "[package.metadata.ship.jobs.cleanup]\nbin = \"nope\"\nschedule = \"daily\"\n",
            "<p>/Cargo.toml:9:7: `package.metadata.ship.jobs.cleanup.bin`: expected one of the binaries of package `hello` (`hello`), found \"nope\"",
        ),
        (
            "[package.metadata.ship.jobs.cleanup]\nschedule = \"daily; rm -rf /\"\n",
            "<p>/Cargo.toml:9:12: `package.metadata.ship.jobs.cleanup.schedule`: expected a systemd calendar expression like \"*-*-* 03:00:00\" or \"daily\", found \"daily; rm -rf /\"",
        ),
        (
            "[package.metadata.ship.jobs.cleanup]\nargs = [\"x\"]\n",
            "<p>/Cargo.toml:8:1: `package.metadata.ship.jobs.cleanup.schedule`: missing: when the job runs",
        ),
        (
            "[package.metadata.ship.jobs.cleanup]\nschedule = \"daily\"\non = \"some\"\n",
            "<p>/Cargo.toml:10:6: `package.metadata.ship.jobs.cleanup.on`: expected \"all\" or \"one\", found \"some\"",
        ),
        (
            "[package.metadata.ship.jobs.cleanup]\nschedule = \"daily\"\ntimeout = \"soon\"\n",
            "<p>/Cargo.toml:10:11: `package.metadata.ship.jobs.cleanup.timeout`: expected a duration like \"30s\", \"2m\" or \"1m 30s\", found \"soon\"",
        ),
        (
            "[package.metadata.ship.jobs.cleanup]\nschedule = \"daily\"\nshedule = \"hourly\"\n",
            "<p>/Cargo.toml:10:1: `package.metadata.ship.jobs.cleanup.shedule`: unknown key; did you mean `schedule`?",
        ),
        (
            "[package.metadata.ship.jobs.\"clean up\"]\nschedule = \"daily\"\n",
            "<p>/Cargo.toml:8:1: `package.metadata.ship.jobs.\"clean up\"`: expected a job name of letters, digits, `-` and `_`, found `clean up`",
        ),
    ];
    for (ship, expected) in cases {
        assert_eq!(error(ship), expected, "{ship}");
    }
    let c = load(
        &hello("[package.metadata.ship.jobs.cleanup]\nargs = [\"--older-than\", \"30d\"]\nschedule = \"*-*-* 03:00:00\"\non = \"one\"\ntimeout = \"1h\"\npersistent = true\nrandomized_delay = \"5m\"\n"),
        None,
    );
    let j = &c.jobs["cleanup"];
    assert_eq!(j.bin, "hello");
    assert_eq!(j.args, ["--older-than", "30d"]);
    assert_eq!(j.schedule, "*-*-* 03:00:00");
    assert_eq!(j.on, cargo_ship::config::JobHosts::One);
    assert_eq!(j.timeout, Some(Duration::from_secs(3600)));
    assert!(j.persistent);
    assert_eq!(j.randomized_delay, Some(Duration::from_secs(300)));
}

/// Issue #16: a service whose unit is another's dead-man's switch (`api` and `api-guard`), or
/// whose deploy_to is inside the other's, is refused before anything is built.
#[test]
fn issue_16_workspace_deploy_refuses_a_unit_that_is_anothers_guard() {
    let p = Project::fixture("workspace-two");
    p.edit(
        "worker/Cargo.toml",
        "shared_dirs = [\"queue\"]",
        "shared_dirs = [\"queue\"]\n\n[package.metadata.ship.systemd]\nunit = \"api-guard\"",
    );
    let out = p.ship().args(["deploy", "staging"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: packages `api` and `worker` both run on deploy@staging1.example.com with units api and api-guard, but api-guard.service is the dead-man's switch of unit api\n"),
        "{stderr}"
    );
    let p = Project::fixture("workspace-two");
    p.edit(
        "worker/Cargo.toml",
        "keep_releases = 8",
        "keep_releases = 8\ndeploy_to = \"/srv/api/worker\"",
    );
    let out = p.ship().args(["deploy", "staging"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: packages `api` and `worker` both run on deploy@staging1.example.com with deploy_to /srv/api and /srv/api/worker, one inside the other\n"),
        "{stderr}"
    );
}
