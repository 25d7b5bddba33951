//! `cargo ship promote <env>` / `cargo ship abort <env>` (#19): the answer to a deploy waiting
//! with `--pause-for-approval`, from another terminal or CI job. The waiting deploy left the
//! word `waiting` in the approval marker inside its deploy lock on one host
//! (`<deploy_to>/.ship/lock/approval`); this looks for it on every host of the environment and
//! rewrites it to `promote` or `abort`, which the deploy reads over its open connection.

use crate::config::Config;
use crate::fleet;
use crate::layout::Layout;
use crate::remote::script::{parse_kv, Script};
use crate::ui::{HostRow, Ui};
use crate::{Error, Result};

/// What to tell the waiting deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go on with the next batches.
    Promote,
    /// Put every switched host back.
    Abort,
}

impl Decision {
    fn word(self) -> &'static str {
        match self {
            Decision::Promote => "promote",
            Decision::Abort => "abort",
        }
    }
}

/// Answers the deploy waiting for approval on the environment's hosts (each service's, in a
/// workspace). Fails when no deploy is waiting.
pub async fn decide(configs: &[Config], decision: Decision, ui: &Ui) -> Result<()> {
    let word = decision.word();
    let mut found = Vec::new();
    let mut env_name = String::new();
    for config in configs {
        env_name = config.env()?.name.clone();
        let layout = Layout::new(&config.deploy_to);
        let rows = fleet::on_each_host(config, &[], ui, |conn| {
            let file = layout.approval();
            async move {
                let mut s = Script::new(format!("{word} the deploy waiting for approval"));
                s.line(
                    "if [ -f {} ] && [ \"$(cat {})\" = waiting ]; then",
                    &[&file, &file],
                );
                s.line("  printf '%s\\n' {} > {}.tmp", &[word, &file]);
                s.line("  mv -f {}.tmp {}", &[&file, &file]);
                s.lines("  echo found=1");
                s.lines("fi");
                let out = conn.run_ok(&s).await?;
                let hit = parse_kv(&out).get("found").is_some_and(|v| v == "1");
                Ok(HostRow {
                    outcome: if hit { word.into() } else { "-".into() },
                    ..fleet::row(&conn)
                })
            }
        })
        .await;
        for (host, r) in rows {
            match r {
                Ok(row) if row.outcome == word => found.push(host),
                Ok(_) => {}
                Err(e) => ui.warn(fleet::first_line(&e.to_string())),
            }
        }
    }
    if found.is_empty() {
        return Err(Error::usage(
            format!("no deploy of environment `{env_name}` is waiting for approval"),
            Some("a deploy waits after its first batch when started with `--pause-for-approval`; `cargo ship status <env>` shows what runs where".into()),
        ));
    }
    ui.status(
        match decision {
            Decision::Promote => "Promoted",
            Decision::Abort => "Aborted",
        },
        format!(
            "the deploy waiting on {} {}",
            found.join(", "),
            match decision {
                Decision::Promote => "goes on with its next batches",
                Decision::Abort => "puts every switched host back",
            }
        ),
    );
    Ok(())
}
