//! `bridge run FILE`: validate, connect, move messages until a signal, drain.

use anyhow::anyhow;

use super::{CliError, RunArgs};
use crate::adapter::ConnectContext;
use crate::config::{self, ProcessEnvironment};
use crate::router::{Router, RouterError};

pub async fn run(args: RunArgs) -> Result<(), CliError> {
    let plan = config::load_file(&args.file, &ProcessEnvironment).map_err(CliError::Config)?;
    let shutdown = crate::shutdown::on_signals()
        .map_err(|e| CliError::Runtime(anyhow!("cannot install signal handlers: {e}")))?;
    let context = ConnectContext::default();
    let router = match Router::connect(&plan, &context, &shutdown).await {
        Ok(router) => router,
        Err(RouterError::Interrupted) => return Ok(()),
        Err(error @ RouterError::NoRoutes) => return Err(CliError::Usage(error.into())),
        Err(error) => return Err(CliError::Runtime(error.into())),
    };
    tracing::info!(routes = plan.routes.len(), "bridge is running");
    let report = router.run(shutdown).await;
    if let Some((route, error)) = report.failed_routes.first() {
        return Err(CliError::Runtime(anyhow!(
            "route `{route}` failed: {error}"
        )));
    }
    if report.drain_timed_out {
        return Err(CliError::Runtime(anyhow!(
            "drain timed out after {:?}; unsettled messages will be redelivered",
            plan.settings.drain_timeout
        )));
    }
    tracing::info!("bridge stopped; everything in flight was settled");
    Ok(())
}
