//! `cargo-ship`: parse the command line, run one flow of the library, render the error once.

mod cli;
mod completions;

use clap::Parser;

use cargo_ship::ui::Event;

fn main() {
    // `cargo ship deploy` runs `cargo-ship ship deploy`; `cargo-ship deploy` works too (that is
    // also the word list shell completion sees).
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_none_or(|a| a != "ship") {
        args.insert(1.min(args.len()), "ship".into());
    }
    let cli::Cargo::Ship(ship) = cli::Cargo::parse_from(args);
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
    // Give background ssh/sftp tasks a moment to finish closing, then leave.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    cargo_ship::remote::session::remove_control_dir();
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
        std::process::exit(code);
    }
}
