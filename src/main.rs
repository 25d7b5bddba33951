//! `cargo-ship`: parse the command line, run one flow of the library, render the error once.

use clap::Parser;

mod cli;
mod completions;

use cargo_ship::ui::Event;

fn main() {
    // `cargo ship deploy` runs `cargo-ship ship deploy`; `cargo-ship deploy` works too (that is
    // also the word list shell completion sees).
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_none_or(|a| a != "ship") {
        args.insert(1.min(args.len()), "ship".into());
    }
    // The command line as the GitHub job summary shows it: `cargo ship deploy prod`.
    let command_line = std::iter::once("cargo".to_string())
        .chain(
            args.iter()
                .skip(1)
                .map(|a| a.to_string_lossy().into_owned()),
        )
        .collect::<Vec<_>>()
        .join(" ");
    let cli::Cargo::Ship(ship) = match cli::Cargo::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            if e.exit_code() != 0 {
                // Under GitHub Actions, a bad command line still gets its outputs.
                let ui = cargo_ship::ui::Ui::new(
                    cargo_ship::ui::Format::Json,
                    cargo_ship::ui::ColorChoice::Never,
                    cargo_ship::ui::Verbosity::Quiet,
                );
                let first = e.to_string();
                let first = first.lines().next().unwrap_or("bad command line");
                let err = cargo_ship::Error::usage(first.trim_start_matches("error: "), None);
                ui.finish(&command_line, Some(&err));
                ui.resume_commands();
            }
            e.exit()
        }
    };
    let ui = ship.ui();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            ui.emit(Event::Error {
                message: format!("cannot start the async runtime: {e}"),
                help: None,
                exit_code: 1,
            });
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(ship.run(&ui));
    // Give background ssh tasks a moment to finish closing, then leave.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    cargo_ship::remote::session::remove_control_dir();
    ui.finish(&command_line, result.as_ref().err());
    if let Err(err) = result {
        let code = err.exit_code();
        let mut message = err.to_string();
        if let cargo_ship::Error::Fleet { errors, .. } = &err {
            for e in errors {
                message.push_str(&format!("\n  - {e}"));
            }
        }
        ui.emit(Event::Error {
            message,
            help: err.help(),
            exit_code: code,
        });
        ui.resume_commands();
        std::process::exit(code);
    }
    ui.resume_commands();
}
