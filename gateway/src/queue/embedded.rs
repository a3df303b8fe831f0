//! The embedded durable queue: one SQLite table with a visibility time.
//!
//! A task is a row of `tasks` (`lane`, `payload`, `visible_at`, `deliveries`, `locked_by`,
//! `locked_until`). `publish` is an `INSERT`: once it is committed the task is durable (the file is
//! in WAL mode, published with `synchronous = FULL`; claims and acks use `NORMAL`, since losing one
//! to a power cut only delivers a task again). `publish_delayed` writes a `visible_at` in the
//! future.
//!
//! A consumer claims ready rows with one atomic `UPDATE … RETURNING` (oldest `visible_at` first,
//! never more than `prefetch` in flight), stamping them with its id and a lease (`locked_until`)
//! that a background task renews while the consumer lives. So:
//! - a consumer dropped without settling gives its rows back at once (they come again with
//!   `redelivered == true`);
//! - a process that dies holding rows loses its lease after the visibility timeout and the rows
//!   come again;
//! - several processes (a `serve` and a `backfill`) can share the file.
//!
//! `ack` deletes the row, `requeue` makes it visible now, `dead_letter` moves it to `dead_tasks`.
//! Idle consumers look for work every `poll_interval`, and are woken at once by a publish of the
//! same process (a [`Notify`]).
//!
//! Times are milliseconds since the Unix epoch, from the clock of the process that writes them.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::{Acker, Consumer, Delivery, Flow, Queue, QueueError, Task};

/// Tunables of the embedded queue; the defaults suit a laptop and the tests.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// How long a claimed task stays hidden from other consumers without its lease being renewed:
    /// the time after which the tasks of a crashed process are delivered again.
    pub visibility_timeout: Duration,
    /// How often an idle consumer looks for tasks published by another process or become visible
    /// (a publish of the same process wakes it at once).
    pub poll_interval: Duration,
    /// Connections to the SQLite file.
    pub max_connections: u32,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(200),
            max_connections: 4,
        }
    }
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS tasks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    lane         TEXT    NOT NULL,
    payload      BLOB    NOT NULL,
    visible_at   INTEGER NOT NULL,
    deliveries   INTEGER NOT NULL DEFAULT 0,
    locked_by    TEXT,
    locked_until INTEGER
);
CREATE INDEX IF NOT EXISTS tasks_ready ON tasks (lane, visible_at, id);
CREATE INDEX IF NOT EXISTS tasks_locked_by ON tasks (locked_by) WHERE locked_by IS NOT NULL;
CREATE TABLE IF NOT EXISTS dead_tasks (
    id         INTEGER PRIMARY KEY,
    lane       TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    deliveries INTEGER NOT NULL,
    reason     TEXT    NOT NULL,
    dead_at    INTEGER NOT NULL
);
"#;

/// A row is ready when it is visible and nobody holds a live lease on it.
const READY: &str = "visible_at <= ?1 AND (locked_until IS NULL OR locked_until <= ?1)";

/// The embedded queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct EmbeddedQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `synchronous = FULL`: what must survive a power cut (publishes, dead letters).
    pool: SqlitePool,
    /// `synchronous = NORMAL`: claims, acks, requeues and leases, whose loss on a power cut only
    /// means a task delivered again (the next FULL commit makes them durable anyway). Halves
    /// the fsyncs per task.
    relaxed: SqlitePool,
    /// Wakes this process's idle consumers when it publishes.
    published: Notify,
    options: EmbeddedOptions,
    path: PathBuf,
}

/// A task moved to `dead_tasks` (by `dead_letter`, or because its payload was not a task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadTask {
    pub id: i64,
    pub lane: String,
    pub payload: Vec<u8>,
    pub deliveries: i64,
    /// `rejected` (the worker dead-lettered it), `malformed`, or `poison` (delivered more than
    /// `DELIVERY_LIMIT + 1` times).
    pub reason: String,
    pub dead_at_ms: i64,
}

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn unavailable(what: &str, err: sqlx::Error) -> QueueError {
    // sqlx errors name the statement's failure, never the bound values: no payload leaks here.
    QueueError::Unavailable(format!("embedded queue: {what}: {err}"))
}

impl EmbeddedQueue {
    /// Opens (creating if needed) the queue in the SQLite file `path`.
    pub async fn open(path: &Path, options: EmbeddedOptions) -> Result<Self, QueueError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|err| {
                QueueError::Unavailable(format!(
                    "embedded queue: cannot create the directory {}: {err}",
                    parent.display()
                ))
            })?;
        }
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .connect_with(connect.clone())
            .await
            .map_err(|err| unavailable(&format!("cannot open {}", path.display()), err))?;
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(|err| unavailable("cannot create its tables", err))?;
        let relaxed = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .connect_with(connect.synchronous(SqliteSynchronous::Normal))
            .await
            .map_err(|err| unavailable(&format!("cannot open {}", path.display()), err))?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                relaxed,
                published: Notify::new(),
                options,
                path: path.to_owned(),
            }),
        })
    }

    /// The SQLite file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Closes the connections (the tests reopen the same file).
    pub async fn close(&self) {
        self.inner.relaxed.close().await;
        self.inner.pool.close().await;
    }

    /// The dead tasks, oldest first (for the operators' commands and the tests).
    pub async fn dead_tasks(&self) -> Result<Vec<DeadTask>, QueueError> {
        let rows = sqlx::query(
            "SELECT id, lane, payload, deliveries, reason, dead_at FROM dead_tasks ORDER BY dead_at, id",
        )
        .fetch_all(&self.inner.pool)
        .await
        .map_err(|err| unavailable("cannot list the dead tasks", err))?;
        rows.into_iter()
            .map(|row| {
                Ok(DeadTask {
                    id: row.try_get("id")?,
                    lane: row.try_get("lane")?,
                    payload: row.try_get("payload")?,
                    deliveries: row.try_get("deliveries")?,
                    reason: row.try_get("reason")?,
                    dead_at_ms: row.try_get("dead_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|err| unavailable("cannot read a dead task", err))
    }

    /// Writes raw bytes as a task (tests: a message that is not a task).
    #[doc(hidden)]
    pub async fn publish_raw(&self, lane: Flow, payload: &[u8]) -> Result<(), QueueError> {
        self.insert(lane, payload, now_ms()).await
    }

    async fn insert(&self, lane: Flow, payload: &[u8], visible_at: i64) -> Result<(), QueueError> {
        sqlx::query("INSERT INTO tasks (lane, payload, visible_at) VALUES (?1, ?2, ?3)")
            .bind(lane.as_str())
            .bind(payload)
            .bind(visible_at)
            .execute(&self.inner.pool)
            .await
            .map_err(|err| unavailable("cannot store a task", err))?;
        self.inner.published.notify_waiters();
        Ok(())
    }
}

fn encode(task: &Task) -> Result<Vec<u8>, QueueError> {
    serde_json::to_vec(task)
        .map_err(|err| QueueError::Refused(format!("the task cannot be serialised: {err}")))
}

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn health(&self) -> Result<(), QueueError> {
        sqlx::query("SELECT count(*) FROM tasks WHERE id = 0")
            .execute(&self.inner.pool)
            .await
            .map_err(|err| unavailable("does not answer", err))?;
        Ok(())
    }

    async fn publish(&self, lane: Flow, task: &Task) -> Result<(), QueueError> {
        self.insert(lane, &encode(task)?, now_ms()).await
    }

    async fn publish_delayed(
        &self,
        lane: Flow,
        task: &Task,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let visible_at = now_ms().saturating_add(ms(delay));
        self.insert(lane, &encode(task)?, visible_at).await
    }

    async fn consume(&self, lane: Flow, prefetch: u16) -> Result<Box<dyn Consumer>, QueueError> {
        let id = format!("c-{}", uuid::Uuid::new_v4());
        let renewer = tokio::spawn(renew_leases(self.inner.clone(), id.clone()));
        Ok(Box::new(EmbeddedConsumer {
            inner: self.inner.clone(),
            lane,
            id: Arc::from(id),
            in_flight: Arc::new(Semaphore::new(usize::from(prefetch.max(1)))),
            claimed: VecDeque::new(),
            renewer,
        }))
    }

    async fn depth(&self, lane: Flow) -> Result<u64, QueueError> {
        let count: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM tasks WHERE lane = ?2 AND {READY}"
        ))
        .bind(now_ms())
        .bind(lane.as_str())
        .fetch_one(&self.inner.pool)
        .await
        .map_err(|err| unavailable("cannot count the tasks", err))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

/// Keeps the leases of a live consumer's rows, so a slow task is not delivered twice.
async fn renew_leases(inner: Arc<Inner>, consumer: String) {
    let timeout = inner.options.visibility_timeout;
    let every = (timeout / 3).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        let renewed = sqlx::query("UPDATE tasks SET locked_until = ?1 WHERE locked_by = ?2")
            .bind(now_ms().saturating_add(ms(timeout)))
            .bind(&consumer)
            .execute(&inner.relaxed)
            .await;
        if let Err(err) = renewed {
            tracing::warn!(error = %err, "embedded queue: could not renew the leases of a consumer; its tasks may be delivered again");
        }
    }
}

/// A claimed row and the prefetch slot it occupies.
#[derive(Debug)]
struct Claimed {
    id: i64,
    payload: Vec<u8>,
    deliveries: i64,
    slot: OwnedSemaphorePermit,
}

#[derive(Debug)]
struct EmbeddedConsumer {
    inner: Arc<Inner>,
    lane: Flow,
    id: Arc<str>,
    /// One permit per task that may be in flight (`prefetch`).
    in_flight: Arc<Semaphore>,
    /// Claimed rows not yet handed out.
    claimed: VecDeque<Claimed>,
    renewer: JoinHandle<()>,
}

impl EmbeddedConsumer {
    async fn claim(&self, limit: usize) -> Result<Vec<(i64, Vec<u8>, i64)>, QueueError> {
        let now = now_ms();
        let lease = now.saturating_add(ms(self.inner.options.visibility_timeout));
        let rows = sqlx::query(&format!(
            "UPDATE tasks SET locked_by = ?2, locked_until = ?3, deliveries = deliveries + 1 \
             WHERE id IN (SELECT id FROM tasks WHERE lane = ?4 AND {READY} \
                          ORDER BY visible_at, id LIMIT ?5) \
             RETURNING id, payload, deliveries, visible_at"
        ))
        .bind(now)
        .bind(&*self.id)
        .bind(lease)
        .bind(self.lane.as_str())
        .bind(i64::try_from(limit).unwrap_or(1))
        .fetch_all(&self.inner.relaxed)
        .await
        .map_err(|err| unavailable("cannot claim tasks", err))?;
        let mut claimed = rows
            .into_iter()
            .map(|row| {
                Ok((
                    row.try_get::<i64, _>("visible_at")?,
                    row.try_get::<i64, _>("id")?,
                    row.try_get::<Vec<u8>, _>("payload")?,
                    row.try_get::<i64, _>("deliveries")?,
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|err| unavailable("cannot read a claimed task", err))?;
        // RETURNING does not keep the sub-select's order.
        claimed.sort_by_key(|(visible_at, id, _, _)| (*visible_at, *id));
        Ok(claimed
            .into_iter()
            .map(|(_, id, payload, deliveries)| (id, payload, deliveries))
            .collect())
    }

    /// Turns a claimed row into a delivery, or dead-letters it when it is not a task.
    async fn deliver(&self, claimed: Claimed) -> Result<Delivery, QueueError> {
        let acker = EmbeddedAcker {
            inner: self.inner.clone(),
            consumer: self.id.clone(),
            id: claimed.id,
            slot: Some(claimed.slot),
            settled: false,
        };
        if claimed.deliveries > i64::from(super::DELIVERY_LIMIT) + 1 {
            // RabbitMQ's `x-delivery-limit`: past it, the task is set aside, never delivered.
            acker.move_to_dead("poison").await?;
            return Err(QueueError::Poison(format!(
                "task {} came back {} times",
                claimed.id,
                claimed.deliveries - 1
            )));
        }
        match serde_json::from_slice::<Task>(&claimed.payload) {
            Ok(task) => Ok(Delivery {
                task,
                redelivered: claimed.deliveries > 1,
                deliveries: u32::try_from(claimed.deliveries).unwrap_or(u32::MAX),
                acker: Box::new(acker),
            }),
            Err(err) => {
                // Never loop on it: it goes to the dead tasks before the error is reported. The
                // error names the kind and place of the fault, not the payload's content.
                let reason = format!(
                    "task {} is not a task ({:?} error at line {} column {})",
                    claimed.id,
                    err.classify(),
                    err.line(),
                    err.column()
                );
                acker.move_to_dead("malformed").await?;
                Err(QueueError::Malformed(reason))
            }
        }
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, QueueError>> {
        loop {
            if let Some(claimed) = self.claimed.pop_front() {
                return Some(self.deliver(claimed).await);
            }
            // Wait for a free prefetch slot, then take every free slot for one claim.
            let first = match self.in_flight.clone().acquire_owned().await {
                Ok(permit) => permit,
                Err(_closed) => return None,
            };
            let mut slots = vec![first];
            while let Ok(permit) = self.in_flight.clone().try_acquire_owned() {
                slots.push(permit);
            }
            loop {
                // Registered before the claim, so a publish between the claim and the wait is
                // not missed.
                let published = self.inner.published.notified();
                tokio::pin!(published);
                published.as_mut().enable();
                let rows = match self.claim(slots.len()).await {
                    Ok(rows) => rows,
                    Err(err) => return Some(Err(err)),
                };
                if rows.is_empty() {
                    tokio::select! {
                        () = &mut published => {}
                        () = tokio::time::sleep(self.inner.options.poll_interval) => {}
                    }
                    continue;
                }
                for ((id, payload, deliveries), slot) in rows.into_iter().zip(slots.drain(..)) {
                    self.claimed.push_back(Claimed {
                        id,
                        payload,
                        deliveries,
                        slot,
                    });
                }
                break;
            }
        }
    }
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        self.renewer.abort();
        // Like a closed AMQP channel: what this consumer held and did not settle comes again.
        let inner = self.inner.clone();
        let consumer = self.id.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let released = sqlx::query(
                    "UPDATE tasks SET locked_by = NULL, locked_until = NULL WHERE locked_by = ?1",
                )
                .bind(&*consumer)
                .execute(&inner.relaxed)
                .await;
                match released {
                    Ok(_) => inner.published.notify_waiters(),
                    Err(err) => tracing::warn!(error = %err, "embedded queue: could not release the tasks of a closed consumer; they come again after the visibility timeout"),
                }
            });
        }
    }
}

#[derive(Debug)]
struct EmbeddedAcker {
    inner: Arc<Inner>,
    consumer: Arc<str>,
    id: i64,
    /// The prefetch slot, freed when the delivery is settled or dropped.
    slot: Option<OwnedSemaphorePermit>,
    settled: bool,
}

fn no_longer_held(id: i64) -> QueueError {
    QueueError::Unavailable(format!(
        "embedded queue: task {id} is no longer held by this consumer (it was closed or its lease expired); it will be delivered again"
    ))
}

impl EmbeddedAcker {
    async fn move_to_dead(mut self, reason: &str) -> Result<(), QueueError> {
        self.settled = true;
        let mut tx = self
            .inner
            .pool
            .begin()
            .await
            .map_err(|err| unavailable("cannot dead-letter a task", err))?;
        let moved = sqlx::query(
            "INSERT INTO dead_tasks (id, lane, payload, deliveries, reason, dead_at) \
             SELECT id, lane, payload, deliveries, ?3, ?4 FROM tasks WHERE id = ?1 AND locked_by = ?2",
        )
        .bind(self.id)
        .bind(&*self.consumer)
        .bind(reason)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|err| unavailable("cannot dead-letter a task", err))?;
        if moved.rows_affected() == 0 {
            return Err(no_longer_held(self.id));
        }
        sqlx::query("DELETE FROM tasks WHERE id = ?1")
            .bind(self.id)
            .execute(&mut *tx)
            .await
            .map_err(|err| unavailable("cannot dead-letter a task", err))?;
        tx.commit()
            .await
            .map_err(|err| unavailable("cannot dead-letter a task", err))?;
        self.slot.take();
        Ok(())
    }
}

async fn release(inner: &Inner, consumer: &str, id: i64) -> Result<u64, sqlx::Error> {
    let released = sqlx::query(
        "UPDATE tasks SET locked_by = NULL, locked_until = NULL, visible_at = ?3 \
         WHERE id = ?1 AND locked_by = ?2",
    )
    .bind(id)
    .bind(consumer)
    .bind(now_ms())
    .execute(&inner.relaxed)
    .await?;
    inner.published.notify_waiters();
    Ok(released.rows_affected())
}

#[async_trait]
impl Acker for EmbeddedAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), QueueError> {
        self.settled = true;
        let deleted = sqlx::query("DELETE FROM tasks WHERE id = ?1 AND locked_by = ?2")
            .bind(self.id)
            .bind(&*self.consumer)
            .execute(&self.inner.relaxed)
            .await
            .map_err(|err| unavailable("cannot acknowledge a task", err))?;
        if deleted.rows_affected() == 0 {
            return Err(no_longer_held(self.id));
        }
        Ok(())
    }

    async fn requeue(mut self: Box<Self>) -> Result<(), QueueError> {
        self.settled = true;
        let released = release(&self.inner, &self.consumer, self.id)
            .await
            .map_err(|err| unavailable("cannot requeue a task", err))?;
        if released == 0 {
            return Err(no_longer_held(self.id));
        }
        Ok(())
    }

    async fn dead_letter(self: Box<Self>) -> Result<(), QueueError> {
        (*self).move_to_dead("rejected").await
    }
}

impl Drop for EmbeddedAcker {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Dropped unsettled (a worker's task panicked or was cancelled): give the task back now
        // rather than hold it, and its prefetch slot, until the consumer closes.
        let inner = self.inner.clone();
        let consumer = self.consumer.clone();
        let id = self.id;
        let slot = self.slot.take();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = release(&inner, &consumer, id).await {
                    tracing::warn!(error = %err, "embedded queue: could not give back a dropped delivery; it comes again when its consumer closes");
                }
                drop(slot);
            });
        }
    }
}
