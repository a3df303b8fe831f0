//! The baseline both benchmarks compare passerelle with: raw lapin, N messages published with
//! publisher confirms (mandatory, up to `window` confirms outstanding) to a durable quorum queue
//! with passerelle's payload and properties, consumed with manual acks at `prefetch`; the figure
//! is N / (first publish → last ack). Included by `queue.rs` and `end_to_end.rs` with `#[path]`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use passerelle::queue::Task;

pub fn task(i: usize) -> Task {
    Task::dossier(format!("PDL-2019-{i:06}"), Some(format!("bench-{i}")))
}

pub async fn raw_lapin(url: &str, n: usize, window: usize, prefetch: u16) -> anyhow::Result<f64> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let consuming = Connection::connect(url, ConnectionProperties::default()).await?;
    let publisher = connection.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    publisher
        .queue_declare(
            "bench.raw".into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let receiver = consuming.create_channel().await?;
    receiver
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = receiver
        .basic_consume(
            "bench.raw".into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let start = Instant::now();
    let consume = tokio::spawn(async move {
        let mut seen = 0;
        while seen < n {
            let delivery = consumer.next().await.context("consumer ended")??;
            serde_json::from_slice::<Task>(&delivery.data)?;
            delivery.acker.ack(BasicAckOptions::default()).await?;
            seen += 1;
        }
        anyhow::Ok(())
    });
    let mut pending = FuturesUnordered::new();
    for i in 0..n {
        let task = task(i);
        let mut headers = FieldTable::default();
        headers.insert(
            "x-request-id".into(),
            AMQPValue::LongString(task.request_id.clone().unwrap_or_default().into()),
        );
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(uuid::Uuid::now_v7().to_string().into())
            .with_headers(headers);
        let confirm = publisher
            .basic_publish(
                "".into(),
                "bench.raw".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &serde_json::to_vec(&task)?,
                properties,
            )
            .await?;
        pending.push(confirm);
        if pending.len() >= window {
            check(pending.next().await)?;
        }
    }
    while let Some(confirm) = pending.next().await {
        check(Some(confirm))?;
    }
    tokio::time::timeout(Duration::from_secs(600), consume).await???;
    let elapsed = start.elapsed();
    connection.close(200, "OK".into()).await?;
    consuming.close(200, "OK".into()).await?;
    Ok(n as f64 / elapsed.as_secs_f64())
}

pub fn check(confirm: Option<lapin::Result<Confirmation>>) -> anyhow::Result<()> {
    match confirm {
        Some(Ok(Confirmation::Ack(None))) => Ok(()),
        other => bail!("not confirmed: {other:?}"),
    }
}
