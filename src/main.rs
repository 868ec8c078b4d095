//! The `bridge` binary: parses arguments, sets up logging and the runtime, runs the
//! command, and maps its error to an exit code (0 ok, 1 runtime failure, 2 usage or config).

use std::process::ExitCode;

use bridge::cli::{Cli, CliError, execute};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    bridge::telemetry::init_logging(
        cli.log_format,
        cli.log_level.as_deref(),
        cli.command.default_log_level(),
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bridge: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(execute(cli.command));
    // Everything that matters has been drained and flushed by now. What may remain is a
    // blocking read of stdin that nothing can cancel: waiting for it would keep a
    // `bridge run` reading an open pipe alive after SIGTERM until its writer closes.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Errors may quote what a broker or a message said: no secret and no control
            // character reaches the terminal.
            let text = match &error {
                CliError::Config(errors) => errors.to_string(),
                other => format!(
                    "bridge: {}\n",
                    bridge::printable::escape(&other.to_string())
                ),
            };
            eprint!("{}", bridge::secret::scrub(&text));
            error.exit_code()
        }
    }
}
