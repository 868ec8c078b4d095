//! The Pub/Sub clients of one `type: pubsub` connection: endpoint and credentials
//! (application default credentials, or none for the emulator), error classification,
//! resource names and declarations.

use std::time::Duration;

use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicyExt};
use google_cloud_pubsub::client::{BasePublisher, Subscriber, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::DeadLetterPolicy;

use super::config::{Config, Declarations, full_name};
use crate::adapter::{AdapterError, ErrorClass};

/// Codes worth retrying, as Google's own client libraries treat them.
const TRANSIENT: [Code; 6] = [
    Code::Unavailable,
    Code::DeadlineExceeded,
    Code::Internal,
    Code::ResourceExhausted,
    Code::Aborted,
    Code::Unknown,
];

/// Classifies a Pub/Sub error: no connection, no answer in time or UNAVAILABLE is the
/// service being unavailable; the other codes above, 429 and 5xx are transient;
/// NOT_FOUND, INVALID_ARGUMENT, PERMISSION_DENIED and the like are permanent.
pub fn classify(error: &google_cloud_pubsub::Error) -> ErrorClass {
    let code = error.status().map(|s| s.code);
    let by_code = code.is_some_and(|code| TRANSIENT.contains(&code));
    let by_http = error
        .http_status_code()
        .is_some_and(|c| c == 429 || c >= 500);
    if error.is_timeout()
        || error.is_connect()
        || error.is_io()
        || error.is_transport()
        || code == Some(Code::Unavailable)
    {
        ErrorClass::Unavailable
    } else if error.is_transient_and_before_rpc() || error.is_exhausted() || by_code || by_http {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    }
}

fn has_code(error: &google_cloud_pubsub::Error, code: Code, http: u16) -> bool {
    error.status().map(|s| s.code) == Some(code) || error.http_status_code() == Some(http)
}

/// Whether the error says the resource exists already.
pub fn already_exists(error: &google_cloud_pubsub::Error) -> bool {
    has_code(error, Code::AlreadyExists, 409)
}

/// Whether the error says the resource does not exist.
pub fn not_found(error: &google_cloud_pubsub::Error) -> bool {
    has_code(error, Code::NotFound, 404)
}

/// An error while opening things, as an [`AdapterError`].
pub fn adapter_error(what: &str, error: &google_cloud_pubsub::Error) -> AdapterError {
    match classify(error) {
        ErrorClass::Transient | ErrorClass::Unavailable => {
            AdapterError::Unavailable(format!("{what}: {error}"))
        }
        ErrorClass::Permanent => AdapterError::Invalid(format!("{what}: {error}")),
    }
}

/// The clients of one connection.
pub struct PubSubClients {
    pub config: Config,
    pub publisher: BasePublisher,
    pub subscriber: Subscriber,
    pub topics: TopicAdmin,
    pub subscriptions: SubscriptionAdmin,
}

fn credentials(
    config: &Config,
) -> Result<google_cloud_auth::credentials::Credentials, AdapterError> {
    if config.anonymous() {
        Ok(google_cloud_auth::credentials::anonymous::Builder::new().build())
    } else {
        google_cloud_auth::credentials::Builder::default()
            .build()
            .map_err(|e| {
                AdapterError::Invalid(format!("no Google application default credentials: {e}"))
            })
    }
}

fn build_error(what: &str, error: impl std::fmt::Display) -> AdapterError {
    AdapterError::Invalid(format!("cannot build the Pub/Sub {what} client: {error}"))
}

impl PubSubClients {
    pub async fn new(config: &Config) -> Result<PubSubClients, AdapterError> {
        let time_limit = Duration::from_millis(config.timeout_ms);
        let retry =
            || google_cloud_pubsub::retry_policy::RetryableErrors.with_time_limit(time_limit);
        let admin_retry = || {
            Aip194Strict
                .with_attempt_limit(5)
                .with_time_limit(time_limit)
        };
        let credentials = credentials(config)?;

        let mut publisher = BasePublisher::builder()
            .with_credentials(credentials.clone())
            .with_retry_policy(retry());
        let mut subscriber = Subscriber::builder().with_credentials(credentials.clone());
        let mut topics = TopicAdmin::builder()
            .with_credentials(credentials.clone())
            .with_retry_policy(admin_retry())
            .with_attempt_timeout(Duration::from_secs(10));
        let mut subscriptions = SubscriptionAdmin::builder()
            .with_credentials(credentials)
            .with_retry_policy(admin_retry())
            .with_attempt_timeout(Duration::from_secs(10));
        if let Some(endpoint) = &config.endpoint {
            let endpoint = endpoint.expose();
            publisher = publisher.with_endpoint(endpoint);
            subscriber = subscriber.with_endpoint(endpoint);
            topics = topics.with_endpoint(endpoint);
            subscriptions = subscriptions.with_endpoint(endpoint);
        }
        Ok(PubSubClients {
            config: config.clone(),
            publisher: publisher
                .build()
                .await
                .map_err(|e| build_error("publisher", e))?,
            subscriber: subscriber
                .build()
                .await
                .map_err(|e| build_error("subscriber", e))?,
            topics: topics
                .build()
                .await
                .map_err(|e| build_error("topic admin", e))?,
            subscriptions: subscriptions
                .build()
                .await
                .map_err(|e| build_error("subscription admin", e))?,
        })
    }

    pub fn describe(&self) -> String {
        super::describe(&self.config)
    }

    pub fn topic(&self, name: &str) -> String {
        full_name(&self.config.project, "topics", name)
    }

    pub fn subscription(&self, name: &str) -> String {
        full_name(&self.config.project, "subscriptions", name)
    }

    /// Fails with [`AdapterError::Unavailable`] when the service cannot be reached.
    pub async fn probe(&self) -> Result<(), AdapterError> {
        let probe = self
            .topics
            .list_topics()
            .set_project(format!("projects/{}", self.config.project))
            .set_page_size(1)
            .send();
        match tokio::time::timeout(Duration::from_millis(self.config.timeout_ms), probe).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error))
                if has_code(&error, Code::Unauthenticated, 401)
                    || has_code(&error, Code::PermissionDenied, 403) =>
            {
                Err(AdapterError::Invalid(format!(
                    "{} refused the credentials: {error}",
                    self.describe()
                )))
            }
            Ok(Err(error)) if classify(&error) == ErrorClass::Permanent => Ok(()),
            Ok(Err(error)) => Err(AdapterError::Unavailable(format!(
                "cannot reach {}: {error} (is it running?)",
                self.describe()
            ))),
            Err(_) => Err(AdapterError::Unavailable(format!(
                "cannot reach {}: no answer (is it running?)",
                self.describe()
            ))),
        }
    }

    /// Fails with a clear message when the topic does not exist.
    pub async fn require_topic(&self, topic: &str) -> Result<(), AdapterError> {
        match self.topics.get_topic().set_topic(topic).send().await {
            Ok(_) => Ok(()),
            Err(error) if not_found(&error) => Err(AdapterError::Invalid(format!(
                "Pub/Sub topic {topic} does not exist; create it or list it under `declare`"
            ))),
            Err(error) => Err(adapter_error(&format!("looking up {topic}"), &error)),
        }
    }

    /// The subscription named `subscription` (a full name); fails when it does not exist.
    async fn find_subscription(
        &self,
        subscription: &str,
    ) -> Result<google_cloud_pubsub::model::Subscription, AdapterError> {
        self.subscriptions
            .get_subscription()
            .set_subscription(subscription)
            .send()
            .await
            .map_err(|error| {
                if not_found(&error) {
                    AdapterError::Invalid(format!(
                        "Pub/Sub subscription {subscription} does not exist; create it or list it under `declare`"
                    ))
                } else {
                    adapter_error(&format!("looking up {subscription}"), &error)
                }
            })
    }

    /// Whether the subscription has a dead-letter policy; fails when it does not exist.
    pub async fn subscription_has_dead_letter(
        &self,
        subscription: &str,
    ) -> Result<bool, AdapterError> {
        let found = self.find_subscription(subscription).await?;
        Ok(found.dead_letter_policy.is_some())
    }

    /// The full name of the topic a subscription receives from.
    pub async fn subscription_topic(&self, subscription: &str) -> Result<String, AdapterError> {
        Ok(self.find_subscription(subscription).await?.topic)
    }

    /// Creates a subscription (for tail), with ordering on.
    pub async fn create_subscription(&self, name: &str, topic: &str) -> Result<(), AdapterError> {
        self.subscriptions
            .create_subscription()
            .set_name(name)
            .set_topic(topic)
            .set_enable_message_ordering(true)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| adapter_error(&format!("creating subscription {name}"), &e))
    }

    pub async fn delete_subscription(&self, name: &str) {
        if let Err(error) = self
            .subscriptions
            .delete_subscription()
            .set_subscription(name)
            .send()
            .await
        {
            tracing::warn!(%error, subscription = %name, "could not delete the temporary subscription");
        }
    }

    /// Creates the declared topics and subscriptions that do not exist yet.
    pub async fn declare(&self, declarations: &Declarations) -> Result<(), AdapterError> {
        for topic in &declarations.topics {
            let name = self.topic(topic);
            match self.topics.create_topic().set_name(&name).send().await {
                Ok(_) => tracing::info!(topic = %name, "Pub/Sub topic created"),
                Err(error) if already_exists(&error) => {}
                Err(error) => return Err(adapter_error(&format!("creating topic {name}"), &error)),
            }
        }
        for subscription in &declarations.subscriptions {
            let name = self.subscription(&subscription.name);
            let mut request = self
                .subscriptions
                .create_subscription()
                .set_name(&name)
                .set_topic(self.topic(&subscription.topic))
                .set_ack_deadline_seconds(subscription.ack_deadline_seconds)
                .set_enable_message_ordering(subscription.ordering);
            if let Some(dead) = &subscription.dead_letter_topic {
                request = request.set_dead_letter_policy(
                    DeadLetterPolicy::new()
                        .set_dead_letter_topic(self.topic(dead))
                        .set_max_delivery_attempts(subscription.max_delivery_attempts),
                );
            }
            match request.send().await {
                Ok(_) => tracing::info!(subscription = %name, "Pub/Sub subscription created"),
                Err(error) if already_exists(&error) => {}
                Err(error) => {
                    return Err(adapter_error(
                        &format!("creating subscription {name}"),
                        &error,
                    ));
                }
            }
        }
        Ok(())
    }
}
