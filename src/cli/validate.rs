//! `bridge validate FILE`: the full check of `bridge run`, without any network access.

use super::{CliError, ValidateArgs};
use crate::config::{self, ProcessEnvironment};

pub fn validate(args: ValidateArgs) -> Result<(), CliError> {
    let plan = config::load_file(&args.file, &ProcessEnvironment).map_err(CliError::Config)?;
    for warning in &plan.warnings {
        eprintln!("{}:{warning} (warning)", args.file.display());
    }
    println!(
        "{}: ok ({} connection{}, {} route{})",
        args.file.display(),
        plan.connections.len(),
        if plan.connections.len() == 1 { "" } else { "s" },
        plan.routes.len(),
        if plan.routes.len() == 1 { "" } else { "s" },
    );
    Ok(())
}
