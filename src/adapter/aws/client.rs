//! The SQS and SNS clients of one `type: aws` connection: credentials through the SDK's
//! default chain (or static ones from the config), region and endpoint override, timeouts,
//! error classification, name resolution (queue URLs, topic ARNs) and declarations.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::QueueAttributeName;

use super::config::{Config, Declarations, Target};
use crate::adapter::{AdapterError, ErrorClass, SendError};

/// Error codes that mean "slow down" or "try later".
const TRANSIENT_CODES: [&str; 9] = [
    "Throttling",
    "Throttled",
    "ThrottlingException",
    "RequestThrottled",
    "ThrottledException",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "KMSThrottling",
];

/// Error codes that mean the credentials themselves are wrong.
const CREDENTIAL_CODES: [&str; 5] = [
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "ExpiredToken",
];

/// Classifies any SQS or SNS call error: no connection or no answer in time is the service
/// being unavailable; a broken response, throttling and 5xx are transient; other service
/// errors (invalid input, missing queue, access denied) are permanent.
pub fn classify<E>(error: &SdkError<E, HttpResponse>) -> (ErrorClass, String)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let text = DisplayErrorContext(error).to_string();
    let class = match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => ErrorClass::Unavailable,
        SdkError::ResponseError(_) => ErrorClass::Transient,
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            if TRANSIENT_CODES.contains(&code) || service.raw().status().as_u16() >= 500 {
                ErrorClass::Transient
            } else {
                ErrorClass::Permanent
            }
        }
        _ => ErrorClass::Permanent,
    };
    (class, text)
}

/// Whether the service refused the credentials (not merely an action).
pub fn is_credential_error<E>(error: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match error {
        SdkError::ServiceError(service) => {
            CREDENTIAL_CODES.contains(&service.err().code().unwrap_or_default())
        }
        _ => false,
    }
}

/// A call error as a [`SendError`].
pub fn send_error<E>(what: &str, error: &SdkError<E, HttpResponse>) -> SendError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (class, text) = classify(error);
    SendError {
        class,
        message: format!("{what}: {text}"),
    }
}

/// A call error as an [`AdapterError`] (opening things).
pub fn adapter_error<E>(what: &str, error: &SdkError<E, HttpResponse>) -> AdapterError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match classify(error) {
        (ErrorClass::Transient | ErrorClass::Unavailable, text) => {
            AdapterError::Unavailable(format!("{what}: {text}"))
        }
        (ErrorClass::Permanent, text) => AdapterError::Invalid(format!("{what}: {text}")),
    }
}

/// SQS and SNS clients sharing one configuration.
pub struct AwsClients {
    pub sqs: aws_sdk_sqs::Client,
    pub sns: aws_sdk_sns::Client,
    pub config: Config,
    queue_urls: Mutex<HashMap<String, String>>,
    topic_arns: Mutex<HashMap<String, String>>,
    /// The account of the first queue URL or topic ARN resolved.
    account: std::sync::OnceLock<String>,
}

impl AwsClients {
    pub async fn new(config: &Config) -> Result<AwsClients, AdapterError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_millis(config.timeout_ms))
                .build(),
        );
        if let Some(region) = &config.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(profile) = &config.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url.expose());
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            let credentials = aws_sdk_sqs::config::Credentials::new(
                id,
                secret.expose(),
                None,
                None,
                "bridge-routes-file",
            );
            loader = loader.credentials_provider(credentials);
        }
        let shared = loader.load().await;
        if shared.region().is_none() {
            return Err(AdapterError::Invalid(
                "no AWS region: set `region` on the connection or AWS_REGION".into(),
            ));
        }
        Ok(AwsClients {
            sqs: aws_sdk_sqs::Client::new(&shared),
            sns: aws_sdk_sns::Client::new(&shared),
            config: config.clone(),
            queue_urls: Mutex::new(HashMap::new()),
            topic_arns: Mutex::new(HashMap::new()),
            account: std::sync::OnceLock::new(),
        })
    }

    /// Where these clients go, safe to print.
    pub fn describe(&self) -> String {
        super::describe(&self.config)
    }

    /// Fails with [`AdapterError::Unavailable`] when the service cannot be reached.
    pub async fn probe(&self) -> Result<(), AdapterError> {
        match self.sqs.list_queues().max_results(1).send().await {
            Ok(_) => Ok(()),
            Err(error) if is_credential_error(&error) => Err(AdapterError::Invalid(format!(
                "{} refused the credentials: {}",
                self.describe(),
                classify(&error).1
            ))),
            Err(error) => match classify(&error) {
                (ErrorClass::Transient | ErrorClass::Unavailable, text) => {
                    Err(AdapterError::Unavailable(format!(
                        "cannot reach {}: {text} (is it running? is `endpoint_url` right?)",
                        self.describe()
                    )))
                }
                // Reachable, but this identity may not list queues: that is fine.
                (ErrorClass::Permanent, _) => Ok(()),
            },
        }
    }

    /// The URL of a queue named by a target (`sqs/NAME` or a URL).
    /// The AWS account of this connection, once a queue URL or topic ARN has been resolved.
    pub fn account(&self) -> Option<&str> {
        self.account.get().map(String::as_str)
    }

    pub async fn queue_url(&self, name: &str) -> Result<String, AdapterError> {
        if name.starts_with("https://") || name.starts_with("http://") {
            return Ok(name.to_owned());
        }
        if let Some(url) = self.queue_urls.lock().expect("queue url cache").get(name) {
            return Ok(url.clone());
        }
        let url = match self.sqs.get_queue_url().queue_name(name).send().await {
            Ok(output) => output.queue_url().unwrap_or_default().to_owned(),
            Err(error) => {
                return Err(match classify(&error) {
                    (ErrorClass::Permanent, text) => AdapterError::Invalid(format!(
                        "SQS queue `{name}` does not exist or is not accessible ({text}); create it or list it under `declare`"
                    )),
                    (ErrorClass::Transient | ErrorClass::Unavailable, text) => {
                        AdapterError::Unavailable(format!(
                            "cannot reach {}: {text}",
                            self.describe()
                        ))
                    }
                });
            }
        };
        // `https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`
        if let Some(account) = url.rsplit('/').nth(1).filter(|a| !a.is_empty()) {
            let _ = self.account.set(account.to_owned());
        }
        self.queue_urls
            .lock()
            .expect("queue url cache")
            .insert(name.to_owned(), url.clone());
        Ok(url)
    }

    /// Queue attributes by name.
    pub async fn queue_attributes(
        &self,
        url: &str,
    ) -> Result<HashMap<QueueAttributeName, String>, AdapterError> {
        let output = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(|e| adapter_error("GetQueueAttributes", &e))?;
        Ok(output.attributes().cloned().unwrap_or_default())
    }

    /// The ARN of a topic named by a target (`sns/NAME` or an ARN).
    pub async fn topic_arn(&self, name: &str) -> Result<String, AdapterError> {
        if name.starts_with("arn:") {
            return Ok(name.to_owned());
        }
        if let Some(arn) = self.topic_arns.lock().expect("topic arn cache").get(name) {
            return Ok(arn.clone());
        }
        let suffix = format!(":{name}");
        let mut next: Option<String> = None;
        loop {
            let output = self
                .sns
                .list_topics()
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| adapter_error("ListTopics", &e))?;
            if let Some(arn) = output
                .topics()
                .iter()
                .filter_map(|t| t.topic_arn())
                .find(|arn| arn.ends_with(&suffix))
            {
                // `arn:aws:sns:REGION:ACCOUNT:NAME`
                if let Some(account) = arn.split(':').nth(4).filter(|a| !a.is_empty()) {
                    let _ = self.account.set(account.to_owned());
                }
                self.topic_arns
                    .lock()
                    .expect("topic arn cache")
                    .insert(name.to_owned(), arn.to_owned());
                return Ok(arn.to_owned());
            }
            match output.next_token() {
                Some(token) => next = Some(token.to_owned()),
                None => {
                    return Err(AdapterError::Invalid(format!(
                        "SNS topic `{name}` does not exist or is not visible; create it, list it under `declare`, or give its ARN"
                    )));
                }
            }
        }
    }

    async fn queue_arn(&self, url: &str) -> Result<String, AdapterError> {
        self.queue_attributes(url)
            .await?
            .remove(&QueueAttributeName::QueueArn)
            .ok_or_else(|| AdapterError::Invalid(format!("queue {url} has no ARN")))
    }

    /// Creates the declared queues, topics and subscriptions that do not exist yet.
    pub async fn declare(&self, declarations: &Declarations) -> Result<(), AdapterError> {
        for queue in &declarations.queues {
            let mut request = self.sqs.create_queue().queue_name(&queue.name);
            if queue.name.ends_with(".fifo") {
                request = request.attributes(QueueAttributeName::FifoQueue, "true");
            }
            for (name, value) in &queue.attributes {
                request = request.attributes(QueueAttributeName::from(name.as_str()), value);
            }
            if let Some(dead) = &queue.dead_letter_queue {
                let dead_url = self.queue_url(dead).await?;
                let policy = serde_json::json!({
                    "deadLetterTargetArn": self.queue_arn(&dead_url).await?,
                    "maxReceiveCount": queue.max_receive_count.to_string(),
                });
                request = request.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
            }
            let url = request
                .send()
                .await
                .map_err(|e| adapter_error(&format!("creating queue `{}`", queue.name), &e))?
                .queue_url()
                .unwrap_or_default()
                .to_owned();
            self.queue_urls
                .lock()
                .expect("queue url cache")
                .insert(queue.name.clone(), url);
        }
        for topic in &declarations.topics {
            let mut request = self.sns.create_topic().name(&topic.name);
            if topic.name.ends_with(".fifo") {
                request = request.attributes("FifoTopic", "true");
            }
            let arn = request
                .send()
                .await
                .map_err(|e| adapter_error(&format!("creating topic `{}`", topic.name), &e))?
                .topic_arn()
                .unwrap_or_default()
                .to_owned();
            self.topic_arns
                .lock()
                .expect("topic arn cache")
                .insert(topic.name.clone(), arn.clone());
            if !topic.subscriptions.is_empty() {
                self.subscribe_queues(&arn, topic).await?;
            }
        }
        Ok(())
    }

    async fn subscribe_queues(
        &self,
        topic_arn: &str,
        topic: &super::config::TopicDeclaration,
    ) -> Result<(), AdapterError> {
        let existing = self
            .sns
            .list_subscriptions_by_topic()
            .topic_arn(topic_arn)
            .send()
            .await
            .map_err(|e| adapter_error("ListSubscriptionsByTopic", &e))?;
        let endpoints: Vec<String> = existing
            .subscriptions()
            .iter()
            .filter_map(|s| s.endpoint().map(str::to_owned))
            .collect();
        for subscription in &topic.subscriptions {
            let url = self.queue_url(&subscription.queue).await?;
            let queue_arn = self.queue_arn(&url).await?;
            if endpoints.contains(&queue_arn) {
                continue;
            }
            self.subscribe_queue(topic_arn, &url, &queue_arn, subscription.raw)
                .await?;
        }
        Ok(())
    }

    /// Subscribes a queue to a topic, allowing the topic to send to it; returns the
    /// subscription ARN.
    pub async fn subscribe_queue(
        &self,
        topic_arn: &str,
        queue_url: &str,
        queue_arn: &str,
        raw: bool,
    ) -> Result<String, AdapterError> {
        self.allow_topic(topic_arn, queue_url, queue_arn).await?;
        let output = self
            .sns
            .subscribe()
            .topic_arn(topic_arn)
            .protocol("sqs")
            .endpoint(queue_arn)
            .attributes("RawMessageDelivery", raw.to_string())
            .return_subscription_arn(true)
            .send()
            .await
            .map_err(|e| adapter_error(&format!("subscribing {queue_arn} to {topic_arn}"), &e))?;
        Ok(output.subscription_arn().unwrap_or_default().to_owned())
    }

    /// Adds a statement that lets `topic_arn` send to the queue, keeping the queue's
    /// existing policy (real SNS needs it; other topics' permissions stay).
    async fn allow_topic(
        &self,
        topic_arn: &str,
        queue_url: &str,
        queue_arn: &str,
    ) -> Result<(), AdapterError> {
        let attributes = self.queue_attributes(queue_url).await?;
        let mut policy: serde_json::Value = match attributes.get(&QueueAttributeName::Policy) {
            None => serde_json::json!({"Version": "2012-10-17", "Statement": []}),
            Some(text) => serde_json::from_str(text).map_err(|e| {
                AdapterError::Invalid(format!(
                    "the access policy of {queue_url} is not JSON ({e}); fix it before subscribing"
                ))
            })?,
        };
        // IAM allows one statement as an object: make it a list before adding ours.
        if let Some(single) = policy.get("Statement").filter(|s| s.is_object()).cloned() {
            policy["Statement"] = serde_json::Value::Array(vec![single]);
        }
        // The full ARN names the topic uniquely (same-named topics in other accounts or
        // regions get statements of their own); Sids allow letters and digits only.
        let sid = format!(
            "bridgeAllow{}",
            topic_arn
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
        );
        let statements = policy
            .get_mut("Statement")
            .and_then(|s| s.as_array_mut())
            .ok_or_else(|| {
                AdapterError::Invalid(format!("the policy of {queue_url} has no Statement list"))
            })?;
        if statements
            .iter()
            .any(|s| s.get("Sid").and_then(|v| v.as_str()) == Some(sid.as_str()))
        {
            return Ok(());
        }
        statements.push(serde_json::json!({
            "Sid": sid,
            "Effect": "Allow",
            "Principal": {"Service": "sns.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
        }));
        self.sqs
            .set_queue_attributes()
            .queue_url(queue_url)
            .attributes(QueueAttributeName::Policy, policy.to_string())
            .send()
            .await
            .map_err(|e| adapter_error("allowing the topic to send to the queue", &e))?;
        Ok(())
    }

    /// The ARN of a queue, by URL.
    pub async fn arn_of_queue(&self, url: &str) -> Result<String, AdapterError> {
        self.queue_arn(url).await
    }

    /// Resolves a target to a queue URL or topic ARN.
    pub async fn resolve(&self, target: &Target) -> Result<String, AdapterError> {
        match target {
            Target::Queue(name) => self.queue_url(name).await,
            Target::Topic(name) => self.topic_arn(name).await,
        }
    }
}
