//! The RabbitMQ queue, through lapin.
//!
//! Topology, declared at every (re)connection (idempotent; `docker/rabbitmq/definitions.json`
//! holds the same):
//!
//! ```text
//! exchange passerelle (direct) ── sync ─────▶ passerelle.sync      (quorum) ─┐ rejected without requeue
//!                              └─ backfill ─▶ passerelle.backfill  (quorum) ─┤ (dead_letter, malformed)
//!                                                                            ▼
//! exchange passerelle.dlx (direct) ── dead ─▶ passerelle.dead (quorum)
//!
//! default exchange ─▶ passerelle.delay.<lane>.<ms>ms (quorum, x-message-ttl = ms)
//!                       └─ on expiry, dead-lettered to exchange passerelle with key <lane>
//! ```
//!
//! Every queue is a durable quorum queue dead-lettering `at-least-once` (which needs
//! `x-overflow: reject-publish`; RabbitMQ ≥ 3.10), so neither a dead letter nor a delayed retry is
//! lost between two queues. A delay is rounded **up** to the next bucket of [`DELAY_BUCKETS_MS`].
//!
//! Publishing uses channels in confirm mode (a small pool, round robin; lapin multiplexes
//! concurrent publishes on a channel and resolves each confirm separately), `mandatory`, persistent
//! messages, `content-type: application/json`, a message id, and the task's request id in the
//! `x-request-id` header. Publishing and consuming use two connections, so a publisher blocked by
//! a broker alarm never stalls the consumers' acknowledgements. A dropped connection is replaced
//! lazily by the next call that needs it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::RwLock;

use super::{mask_url, Acker, Consumer, Delivery, Flow, Queue, QueueError, Task};

/// The exchange tasks are published to, with the lane as routing key.
pub const EXCHANGE: &str = "passerelle";
/// The dead-letter exchange of the lanes.
pub const DEAD_EXCHANGE: &str = "passerelle.dlx";
/// Where dead-lettered tasks wait for an operator.
pub const DEAD_QUEUE: &str = "passerelle.dead";
/// The routing key of dead letters.
pub const DEAD_ROUTING_KEY: &str = "dead";
/// The AMQP header carrying the task's request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The delays a delayed task can wait, in milliseconds; a delay is rounded up to the next one,
/// and a longer one is shortened to the last one.
pub const DELAY_BUCKETS_MS: [u64; 12] = [
    250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 300_000, 900_000, 3_600_000,
];

/// The queue of a lane.
pub fn queue_name(lane: Flow) -> String {
    format!("{EXCHANGE}.{}", lane.as_str())
}

/// The delay queue of a lane and bucket.
pub fn delay_queue_name(lane: Flow, bucket_ms: u64) -> String {
    format!("{EXCHANGE}.delay.{}.{bucket_ms}ms", lane.as_str())
}

/// The bucket a delay goes to, `None` for no delay.
pub fn delay_bucket(delay: Duration) -> Option<u64> {
    if delay.is_zero() {
        return None;
    }
    let wanted = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    DELAY_BUCKETS_MS
        .iter()
        .copied()
        .find(|bucket| *bucket >= wanted)
        .or(DELAY_BUCKETS_MS.last().copied())
}

/// Tunables of the RabbitMQ queue.
#[derive(Debug, Clone)]
pub struct AmqpOptions {
    /// Publishing channels in confirm mode, used in turn.
    pub publish_channels: usize,
    /// How long a publish waits for the broker's confirm before answering `Unavailable`.
    pub confirm_timeout: Duration,
    /// How long opening a connection (and declaring the topology) may take.
    pub connect_timeout: Duration,
}

impl Default for AmqpOptions {
    fn default() -> Self {
        Self {
            publish_channels: 4,
            confirm_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// The RabbitMQ queue.
#[derive(Debug)]
pub struct AmqpQueue {
    uri: String,
    /// The URI with its password masked, for messages.
    shown: String,
    options: AmqpOptions,
    publisher: Slot,
    consumers: Slot,
}

/// A connection that is replaced when it is found dead.
#[derive(Debug)]
struct Slot {
    role: &'static str,
    /// Publishing channels in confirm mode (none for the consumers' connection).
    channels: usize,
    current: RwLock<Option<Arc<Link>>>,
}

#[derive(Debug)]
struct Link {
    connection: Connection,
    channels: Vec<Channel>,
    next: AtomicUsize,
}

impl Link {
    fn alive(&self) -> bool {
        self.connection.status().connected() && self.channels.iter().all(|c| c.status().connected())
    }

    fn channel(&self) -> Option<&Channel> {
        if self.channels.is_empty() {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels.get(turn)
    }
}

fn str_arg(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

/// A queue argument's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgValue {
    Str(String),
    Int(i64),
}

/// A queue of the topology, its arguments, and the binding that feeds it (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: String,
    pub arguments: Vec<(&'static str, ArgValue)>,
    /// `(exchange, routing key)`.
    pub binding: Option<(&'static str, String)>,
}

/// The arguments every queue of the topology shares: quorum, dead-lettered `at-least-once`.
fn quorum_args(dead_exchange: &str, dead_key: &str) -> Vec<(&'static str, ArgValue)> {
    vec![
        ("x-queue-type", ArgValue::Str("quorum".into())),
        (
            "x-dead-letter-exchange",
            ArgValue::Str(dead_exchange.into()),
        ),
        ("x-dead-letter-routing-key", ArgValue::Str(dead_key.into())),
        (
            "x-dead-letter-strategy",
            ArgValue::Str("at-least-once".into()),
        ),
        ("x-overflow", ArgValue::Str("reject-publish".into())),
    ]
}

/// The exchanges of the topology (all durable, direct).
pub const EXCHANGES: [&str; 2] = [EXCHANGE, DEAD_EXCHANGE];

/// Every queue of the topology (`docker/rabbitmq/definitions.json` holds the same).
pub fn queue_specs() -> Vec<QueueSpec> {
    let mut specs = vec![QueueSpec {
        name: DEAD_QUEUE.to_owned(),
        arguments: vec![("x-queue-type", ArgValue::Str("quorum".into()))],
        binding: Some((DEAD_EXCHANGE, DEAD_ROUTING_KEY.to_owned())),
    }];
    for lane in Flow::ALL {
        let mut arguments = quorum_args(DEAD_EXCHANGE, DEAD_ROUTING_KEY);
        // Past it the broker dead-letters the task (see `DELIVERY_LIMIT`).
        arguments.push((
            "x-delivery-limit",
            ArgValue::Int(i64::from(super::DELIVERY_LIMIT)),
        ));
        specs.push(QueueSpec {
            name: queue_name(lane),
            arguments,
            binding: Some((EXCHANGE, lane.as_str().to_owned())),
        });
        for bucket in DELAY_BUCKETS_MS {
            let mut arguments = quorum_args(EXCHANGE, lane.as_str());
            arguments.push((
                "x-message-ttl",
                ArgValue::Int(i64::try_from(bucket).unwrap_or(i64::MAX)),
            ));
            specs.push(QueueSpec {
                name: delay_queue_name(lane, bucket),
                arguments,
                // Published to through the default exchange.
                binding: None,
            });
        }
    }
    specs
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares the exchanges, queues and bindings (idempotent).
async fn declare_topology(channel: &Channel) -> Result<(), lapin::Error> {
    let exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    for name in EXCHANGES {
        channel
            .exchange_declare(
                name.into(),
                ExchangeKind::Direct,
                exchange,
                FieldTable::default(),
            )
            .await?;
    }
    for spec in queue_specs() {
        let mut arguments = FieldTable::default();
        for (key, value) in &spec.arguments {
            let value = match value {
                ArgValue::Str(s) => str_arg(s),
                ArgValue::Int(i) => AMQPValue::LongLongInt(*i),
            };
            arguments.insert((*key).into(), value);
        }
        channel
            .queue_declare(spec.name.as_str().into(), durable(), arguments)
            .await?;
        if let Some((exchange, key)) = &spec.binding {
            channel
                .queue_bind(
                    spec.name.as_str().into(),
                    (*exchange).into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
    }
    Ok(())
}

impl AmqpQueue {
    /// Connects, declares the topology and opens the publishing channels.
    pub async fn connect(uri: &str, options: AmqpOptions) -> Result<Self, QueueError> {
        let queue = Self {
            uri: uri.to_owned(),
            shown: mask_url(uri),
            publisher: Slot {
                role: "publishing",
                channels: options.publish_channels.max(1),
                current: RwLock::new(None),
            },
            consumers: Slot {
                role: "consuming",
                channels: 0,
                current: RwLock::new(None),
            },
            options,
        };
        queue.link(&queue.publisher).await?;
        Ok(queue)
    }

    fn unavailable(&self, what: &str, err: impl std::fmt::Display) -> QueueError {
        QueueError::Unavailable(format!("RabbitMQ at {}: {what}: {err}", self.shown))
    }

    /// The slot's live connection, or a new one.
    async fn link(&self, slot: &Slot) -> Result<Arc<Link>, QueueError> {
        if let Some(link) = slot.current.read().await.as_ref() {
            if link.alive() {
                return Ok(link.clone());
            }
        }
        let mut current = slot.current.write().await;
        if let Some(link) = current.as_ref() {
            if link.alive() {
                return Ok(link.clone());
            }
            tracing::info!(role = slot.role, "RabbitMQ connection lost; reconnecting");
        }
        let link = tokio::time::timeout(self.options.connect_timeout, self.open(slot))
            .await
            .map_err(|_elapsed| {
                self.unavailable(
                    &format!("no {} connection within", slot.role),
                    format_args!("{:?}", self.options.connect_timeout),
                )
            })??;
        let link = Arc::new(link);
        *current = Some(link.clone());
        Ok(link)
    }

    async fn open(&self, slot: &Slot) -> Result<Link, QueueError> {
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("passerelle ({})", slot.role).into());
        let connection = Connection::connect(&self.uri, properties)
            .await
            .map_err(|err| self.unavailable("cannot connect", err))?;
        let setup = connection
            .create_channel()
            .await
            .map_err(|err| self.unavailable("cannot open a channel", err))?;
        declare_topology(&setup)
            .await
            .map_err(|err| self.unavailable("cannot declare the topology", err))?;
        drop(setup);
        let mut channels = Vec::with_capacity(slot.channels);
        for _ in 0..slot.channels {
            let channel = connection
                .create_channel()
                .await
                .map_err(|err| self.unavailable("cannot open a channel", err))?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|err| self.unavailable("cannot enable publisher confirms", err))?;
            channels.push(channel);
        }
        Ok(Link {
            connection,
            channels,
            next: AtomicUsize::new(0),
        })
    }

    /// Publishes bytes and waits for the broker's confirm.
    async fn publish_bytes(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> Result<(), QueueError> {
        let link = self.link(&self.publisher).await?;
        let channel = link
            .channel()
            .ok_or_else(|| self.unavailable("publishing", "no channel"))?;
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirm = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                options,
                payload,
                properties,
            )
            .await
            .map_err(|err| self.unavailable("cannot publish", err))?;
        let confirmation = tokio::time::timeout(self.options.confirm_timeout, confirm)
            .await
            .map_err(|_elapsed| {
                self.unavailable(
                    "no publisher confirm within",
                    format_args!("{:?}", self.options.confirm_timeout),
                )
            })?
            .map_err(|err| self.unavailable("no publisher confirm", err))?;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                Err(QueueError::Refused(format!(
                    "RabbitMQ returned the message sent to {exchange:?} with key {routing_key:?}: {} {}",
                    returned.reply_code, returned.reply_text
                )))
            }
            Confirmation::Nack(None) => Err(QueueError::Refused(format!(
                "RabbitMQ nacked the message sent to {exchange:?} with key {routing_key:?}"
            ))),
            Confirmation::NotRequested => {
                Err(self.unavailable("publishing", "the channel is not in confirm mode"))
            }
        }
    }

    /// Publishes raw bytes to a lane (tests: a message that is not a task).
    #[doc(hidden)]
    pub async fn publish_raw(&self, lane: Flow, payload: &[u8]) -> Result<(), QueueError> {
        let properties = BasicProperties::default().with_delivery_mode(2);
        self.publish_bytes(EXCHANGE, lane.as_str(), payload, properties)
            .await
    }

    /// Messages waiting in a queue of the topology, by name (e.g. [`DEAD_QUEUE`]).
    pub async fn queue_depth(&self, name: &str) -> Result<u64, QueueError> {
        let link = self.link(&self.publisher).await?;
        // A throw-away channel: a failed passive declare closes its channel.
        let channel = link
            .connection
            .create_channel()
            .await
            .map_err(|err| self.unavailable("cannot open a channel", err))?;
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let queue = channel
            .queue_declare(name.into(), options, FieldTable::default())
            .await
            .map_err(|err| self.unavailable(&format!("cannot inspect queue {name}"), err))?;
        let _ = channel.close(200, "OK".into()).await;
        Ok(u64::from(queue.message_count()))
    }

    /// Closes both connections (tests: a restart of the gateway).
    pub async fn close(&self) {
        for slot in [&self.publisher, &self.consumers] {
            if let Some(link) = slot.current.write().await.take() {
                let _ = link.connection.close(200, "OK".into()).await;
            }
        }
    }
}

fn properties(task: &Task) -> BasicProperties {
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(uuid::Uuid::now_v7().to_string().into());
    if let Some(request_id) = &task.request_id {
        let mut headers = FieldTable::default();
        headers.insert(REQUEST_ID_HEADER.into(), str_arg(request_id));
        properties = properties.with_headers(headers);
    }
    properties
}

fn encode(task: &Task) -> Result<Vec<u8>, QueueError> {
    serde_json::to_vec(task)
        .map_err(|err| QueueError::Refused(format!("the task cannot be serialised: {err}")))
}

#[async_trait]
impl Queue for AmqpQueue {
    async fn health(&self) -> Result<(), QueueError> {
        self.queue_depth(&queue_name(Flow::Sync)).await.map(|_| ())
    }

    async fn publish(&self, lane: Flow, task: &Task) -> Result<(), QueueError> {
        self.publish_bytes(EXCHANGE, lane.as_str(), &encode(task)?, properties(task))
            .await
    }

    async fn publish_delayed(
        &self,
        lane: Flow,
        task: &Task,
        delay: Duration,
    ) -> Result<(), QueueError> {
        match delay_bucket(delay) {
            None => self.publish(lane, task).await,
            Some(bucket) => {
                // The default exchange routes by queue name.
                self.publish_bytes(
                    "",
                    &delay_queue_name(lane, bucket),
                    &encode(task)?,
                    properties(task),
                )
                .await
            }
        }
    }

    async fn consume(&self, lane: Flow, prefetch: u16) -> Result<Box<dyn Consumer>, QueueError> {
        let link = self.link(&self.consumers).await?;
        let channel = link
            .connection
            .create_channel()
            .await
            .map_err(|err| self.unavailable("cannot open a channel", err))?;
        channel
            .basic_qos(prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(|err| self.unavailable("cannot set the prefetch", err))?;
        let tag = format!("passerelle-{}-{}", lane.as_str(), uuid::Uuid::new_v4());
        let consumer = channel
            .basic_consume(
                queue_name(lane).as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|err| {
                self.unavailable(&format!("cannot consume lane {}", lane.as_str()), err)
            })?;
        Ok(Box::new(AmqpConsumer {
            _channel: channel,
            consumer,
            shown: self.shown.clone(),
            ended: false,
        }))
    }

    async fn depth(&self, lane: Flow) -> Result<u64, QueueError> {
        self.queue_depth(&queue_name(lane)).await
    }
}

/// One consumer on its own channel; dropping it closes the channel, so what it did not settle is
/// delivered again.
#[derive(Debug)]
struct AmqpConsumer {
    /// Kept so the channel lives as long as the consumer (the last handle closes it).
    _channel: Channel,
    consumer: lapin::Consumer,
    shown: String,
    ended: bool,
}

#[async_trait]
impl Consumer for AmqpConsumer {
    /// After an error of the channel or connection the consumer yields that error once, then
    /// `None`: the caller consumes again (which reconnects).
    async fn next(&mut self) -> Option<Result<Delivery, QueueError>> {
        if self.ended {
            return None;
        }
        let delivery = match self.consumer.next().await {
            None => {
                self.ended = true;
                return None;
            }
            Some(Err(err)) => {
                self.ended = true;
                return Some(Err(QueueError::Unavailable(format!(
                    "RabbitMQ at {}: the consumer stopped: {err}",
                    self.shown
                ))));
            }
            Some(Ok(delivery)) => delivery,
        };
        match serde_json::from_slice::<Task>(&delivery.data) {
            Ok(task) => Some(Ok(Delivery {
                task,
                redelivered: delivery.redelivered,
                deliveries: delivery_count(&delivery.properties).saturating_add(1),
                acker: Box::new(AmqpAcker {
                    acker: delivery.acker,
                    settled: false,
                }),
            })),
            Err(err) => {
                // Never loop on it: rejected without requeue, it goes to the dead-letter queue.
                // The error names the kind and place of the fault, not the payload's content.
                let reason = format!(
                    "message {} is not a task ({:?} error at line {} column {})",
                    delivery
                        .properties
                        .message_id()
                        .as_ref()
                        .map_or("without id", |id| id.as_str()),
                    err.classify(),
                    err.line(),
                    err.column()
                );
                let rejected = delivery
                    .acker
                    .reject(BasicRejectOptions { requeue: false })
                    .await;
                if let Err(err) = rejected {
                    return Some(Err(QueueError::Unavailable(format!(
                        "RabbitMQ at {}: cannot dead-letter a malformed message: {err}",
                        self.shown
                    ))));
                }
                Some(Err(QueueError::Malformed(reason)))
            }
        }
    }
}

/// How many times the quorum queue took the message back (`x-delivery-count`; absent: none).
fn delivery_count(properties: &BasicProperties) -> u32 {
    let Some(headers) = properties.headers() else {
        return 0;
    };
    match headers.inner().get("x-delivery-count") {
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        Some(AMQPValue::ShortInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::ShortUInt(n)) => u32::from(*n),
        Some(AMQPValue::ShortShortInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        Some(AMQPValue::ShortShortUInt(n)) => u32::from(*n),
        _ => 0,
    }
}

#[derive(Debug)]
struct AmqpAcker {
    acker: lapin::Acker,
    settled: bool,
}

fn settled(what: &str, outcome: lapin::Result<bool>) -> Result<(), QueueError> {
    match outcome {
        Ok(true) => Ok(()),
        Ok(false) => Err(QueueError::Unavailable(format!(
            "RabbitMQ: cannot {what}: the channel of this delivery is closed; it will be delivered again"
        ))),
        Err(err) => Err(QueueError::Unavailable(format!(
            "RabbitMQ: cannot {what}: {err}"
        ))),
    }
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), QueueError> {
        self.settled = true;
        settled("ack", self.acker.ack(BasicAckOptions::default()).await)
    }

    async fn requeue(mut self: Box<Self>) -> Result<(), QueueError> {
        self.settled = true;
        let options = BasicNackOptions {
            requeue: true,
            multiple: false,
        };
        settled("requeue", self.acker.nack(options).await)
    }

    async fn dead_letter(mut self: Box<Self>) -> Result<(), QueueError> {
        self.settled = true;
        settled(
            "dead-letter",
            self.acker
                .reject(BasicRejectOptions { requeue: false })
                .await,
        )
    }
}

impl Drop for AmqpAcker {
    fn drop(&mut self) {
        if self.settled || !self.acker.usable() {
            return;
        }
        // Dropped unsettled (a worker's task panicked or was cancelled): give the task back now
        // rather than hold it, and a prefetch slot, until the channel closes.
        let acker = self.acker.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let options = BasicNackOptions {
                    requeue: true,
                    multiple: false,
                };
                if let Err(err) = acker.nack(options).await {
                    tracing::debug!(error = %err, "RabbitMQ: could not give back a dropped delivery; it comes again when its channel closes");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_up_to_a_bucket() {
        assert_eq!(delay_bucket(Duration::ZERO), None);
        assert_eq!(delay_bucket(Duration::from_millis(1)), Some(250));
        assert_eq!(delay_bucket(Duration::from_millis(250)), Some(250));
        assert_eq!(delay_bucket(Duration::from_millis(251)), Some(500));
        assert_eq!(delay_bucket(Duration::from_secs(60)), Some(64_000));
        assert_eq!(delay_bucket(Duration::from_secs(65)), Some(300_000));
        assert_eq!(delay_bucket(Duration::from_secs(86_400)), Some(3_600_000));
    }

    /// `docker/rabbitmq/definitions.json` declares exactly the topology the code declares.
    #[test]
    fn definitions_file_matches_the_code() {
        let file: serde_json::Value =
            serde_json::from_str(include_str!("../../../docker/rabbitmq/definitions.json"))
                .expect("definitions.json is JSON");
        let mut exchanges: Vec<String> = file["exchanges"]
            .as_array()
            .expect("exchanges")
            .iter()
            .map(|e| {
                assert_eq!(e["type"], "direct");
                assert_eq!(e["durable"], true);
                e["name"].as_str().expect("name").to_owned()
            })
            .collect();
        exchanges.sort();
        let mut expected: Vec<String> = EXCHANGES.iter().map(|e| (*e).to_owned()).collect();
        expected.sort();
        assert_eq!(exchanges, expected);

        let queues = file["queues"].as_array().expect("queues");
        let specs = queue_specs();
        assert_eq!(queues.len(), specs.len());
        for spec in &specs {
            let queue = queues
                .iter()
                .find(|q| q["name"] == spec.name.as_str())
                .unwrap_or_else(|| panic!("{} is missing", spec.name));
            assert_eq!(queue["durable"], true, "{}", spec.name);
            let arguments = queue["arguments"].as_object().expect("arguments");
            assert_eq!(arguments.len(), spec.arguments.len(), "{}", spec.name);
            for (key, value) in &spec.arguments {
                let want = match value {
                    ArgValue::Str(s) => serde_json::json!(s),
                    ArgValue::Int(i) => serde_json::json!(i),
                };
                assert_eq!(arguments[*key], want, "{} {key}", spec.name);
            }
        }

        let bindings = file["bindings"].as_array().expect("bindings");
        let expected: Vec<_> = specs.iter().filter(|s| s.binding.is_some()).collect();
        assert_eq!(bindings.len(), expected.len());
        for spec in expected {
            let Some((exchange, key)) = &spec.binding else {
                continue;
            };
            assert!(
                bindings.iter().any(|b| b["source"] == *exchange
                    && b["destination"] == spec.name.as_str()
                    && b["destination_type"] == "queue"
                    && b["routing_key"] == key.as_str()),
                "binding of {} is missing",
                spec.name
            );
        }
    }
}
