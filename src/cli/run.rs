//! `bridge run FILE`: validate, serve the HTTP port, connect, move messages until a
//! signal, drain. `/readyz` turns 200 once every route is connected and 503 again as soon
//! as the drain starts.

use anyhow::anyhow;

use super::{CliError, RunArgs};
use crate::adapter::ConnectContext;
use crate::config::model::CountHops;
use crate::config::{self, ProcessEnvironment};
use crate::message::HopCounting;
use crate::router::{Router, RouterError};
use crate::telemetry::http::{self, Readiness};

pub async fn run(args: RunArgs) -> Result<(), CliError> {
    let plan = config::load_file(&args.file, &ProcessEnvironment).map_err(CliError::Config)?;
    for warning in &plan.warnings {
        tracing::warn!(file = %args.file.display(), "{warning}");
    }
    let listen = args
        .http_listen
        .unwrap_or_else(|| plan.settings.http.listen.clone());
    config::check_listen(&listen)
        .map_err(|message| CliError::Usage(anyhow!("--http-listen: {message}")))?;
    let shutdown = crate::shutdown::on_signals()
        .and_then(|token| crate::shutdown::ignore_hangup().map(|()| token))
        .map_err(|e| CliError::Runtime(anyhow!("cannot install signal handlers: {e}")))?;
    let readiness = Readiness::default();
    if listen != "off" {
        let metrics = http::install_recorder().map_err(|e| CliError::Runtime(anyhow!(e)))?;
        let address = http::serve(&listen, metrics, readiness.clone())
            .await
            .map_err(|e| CliError::Runtime(anyhow!(e)))?;
        tracing::info!("serving /metrics, /healthz and /readyz on http://{address}");
    }
    let drain_flag = {
        let (readiness, shutdown) = (readiness.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            readiness.draining();
        })
    };
    let context = ConnectContext::default();
    let router = match Router::connect(&plan, &context, &shutdown).await {
        Ok(router) => router,
        Err(RouterError::Interrupted) => return Ok(()),
        Err(error @ RouterError::NoRoutes) => return Err(CliError::Usage(error.into())),
        Err(error) => return Err(CliError::Runtime(error.into())),
    };
    readiness.ready();
    tracing::info!(routes = plan.routes.len(), "bridge is running");
    for route in plan
        .routes
        .iter()
        .filter(|r| r.count_hops == CountHops::Auto)
    {
        if route.hop_counting == HopCounting::Always {
            tracing::info!(route = %route.name, "the route can feed its own source: it counts hops on every message");
        }
    }
    let report = router.run(shutdown).await;
    drain_flag.abort();
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
