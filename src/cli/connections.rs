//! Finds the connection an endpoint of `send` or `tail` names: from `--url`, else from the
//! routes file given by `--config` (or `routes.yaml` in the working directory).

use std::path::PathBuf;

use anyhow::anyhow;

use super::{CliError, ConnectionArgs};
use std::sync::Arc;

use crate::adapter::Connection;
use crate::address::Endpoint;
use crate::config::{self, ProcessEnvironment};

const DEFAULT_CONFIG: &str = "routes.yaml";

/// The endpoint and the configuration of its connection.
pub fn resolve(
    address: &str,
    args: &ConnectionArgs,
) -> Result<(Endpoint, Arc<dyn Connection>), CliError> {
    let endpoint: Endpoint = address
        .parse()
        .map_err(|e| CliError::Usage(anyhow!("{e}")))?;
    if let Some(url) = &args.url {
        let spec = crate::adapter::connection_from_url(url)
            .map_err(|e| CliError::Usage(anyhow!("--url: {e}")))?;
        return Ok((endpoint, spec));
    }
    let file = match &args.config {
        Some(file) => file.clone(),
        None if std::path::Path::new(DEFAULT_CONFIG).exists() => PathBuf::from(DEFAULT_CONFIG),
        None => {
            return Err(CliError::Usage(anyhow!(
                "no connection `{}`: pass --config FILE (a routes file that defines it) or --url URL",
                endpoint.connection
            )));
        }
    };
    let plan = config::load_file(&file, &ProcessEnvironment).map_err(CliError::Config)?;
    let spec = plan
        .connections
        .get(&endpoint.connection)
        .cloned()
        .ok_or_else(|| {
            let known: Vec<_> = plan.connections.keys().cloned().collect();
            CliError::Usage(anyhow!(
                "{} has no connection `{}` (it defines: {}); or pass --url URL",
                file.display(),
                endpoint.connection,
                known.join(", ")
            ))
        })?;
    Ok((endpoint, spec))
}
