//! The writer: [`StreamSink::start`] and the background thread (`fw-stream`) that sends the
//! queue to Redis in `XADD` batches, reconnecting with backoff after a failure, and the
//! shutdown when the sink is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::location::{StreamLocation, default_instance};
use super::queue::{QueuedEvent, SinkShared, StreamSink, WriterState};
use super::wire::{FieldValue, visit_fields};
use crate::error::Error;
use crate::link::{self, Client, Connection};
use crate::monitor::MonitorConfig;
use crate::store::StoreConfig;

/// The deadline of one batch write, connecting included.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a dropped sink keeps writing what is queued before it drops the rest.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// The writer's first wait after a failed batch; it doubles with every failure in a row.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The writer's longest wait after a failed batch.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often the writer looks at the queue while a batch fills (it is also woken when the
/// queue holds a full batch, when a flush is asked for, and when the sink is dropped).
const TICK: Duration = Duration::from_millis(20);

impl StreamSink {
    /// The sink `config` asks for (`None` without `monitor.stream`), its writer started.
    /// Nothing connects until the first batch.
    pub(crate) fn start(
        config: &MonitorConfig,
        store: &StoreConfig,
    ) -> Result<Option<Self>, Error> {
        let Some(stream) = &config.stream else {
            return Ok(None);
        };
        let (location, field) = StreamLocation::of_config(config, store)?;
        let client = location.client(field, WRITE_TIMEOUT, Some(2))?;
        link::start()?;
        let shared = Arc::new(SinkShared {
            stream: stream.clone(),
            offered: AtomicU64::new(0),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(None),
            state: Mutex::new(WriterState::default()),
            wake: Condvar::new(),
            settled: Condvar::new(),
        });
        let (sender, receiver) = mpsc::channel();
        let writer = Writer {
            shared: Arc::clone(&shared),
            receiver,
            client,
            connection: None,
            maxlen: config.maxlen,
            batch: config.batch,
            flush: config.flush.0,
            source: config.instance.clone().unwrap_or_else(default_instance),
            backoff: Duration::ZERO,
        };
        let worker = std::thread::Builder::new()
            .name("fw-stream".to_owned())
            .spawn(move || writer.run())
            .map_err(|e| {
                Error::config(
                    "monitor.stream",
                    format!("cannot start the stream writer: {e}"),
                )
            })?;
        Ok(Some(StreamSink {
            shared,
            sender: Some(sender),
            worker: Some(worker),
            capacity: config.queue as u64,
            batch: config.batch as u64,
        }))
    }
}

impl Drop for StreamSink {
    fn drop(&mut self) {
        self.shared.state.lock().closing = Some(Instant::now() + SHUTDOWN_GRACE);
        self.shared.wake.notify_all();
        // Without a sender, the writer's queue ends once it is empty.
        drop(self.sender.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The writer thread's state.
struct Writer {
    shared: Arc<SinkShared>,
    receiver: Receiver<QueuedEvent>,
    client: Client,
    connection: Option<Connection>,
    maxlen: u64,
    batch: usize,
    flush: Duration,
    source: String,
    backoff: Duration,
}

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(self.batch);
        loop {
            let ended = self.fill(&mut batch);
            if !batch.is_empty() {
                self.write(&mut batch);
            }
            if ended {
                self.connection = None;
                link::settle();
                return;
            }
        }
    }

    /// Waits for an event, then for a full batch — at most `flush`, less when a flush is
    /// asked for or the sink is closing. Returns whether the queue has ended (the sink was
    /// dropped and everything it queued has been taken).
    fn fill(&mut self, batch: &mut Vec<QueuedEvent>) -> bool {
        match self.receiver.recv() {
            Ok(event) => batch.push(event),
            Err(_) => return true,
        }
        let deadline = Instant::now() + self.flush;
        loop {
            while batch.len() < self.batch {
                match self.receiver.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return true,
                }
            }
            if batch.len() >= self.batch {
                return false;
            }
            let mut state = self.shared.state.lock();
            if state.closing.is_some() || std::mem::take(&mut state.flush_requested) {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            self.shared
                .wake
                .wait_for(&mut state, (deadline - now).min(TICK));
        }
    }

    /// Writes `batch` in one round trip (emptying it) and counts the outcome; after a
    /// failure, forgets the connection and backs off.
    fn write(&mut self, batch: &mut Vec<QueuedEvent>) {
        let n = batch.len() as u64;
        let closing = self.shared.state.lock().closing;
        let timeout = match closing {
            Some(deadline) => deadline
                .saturating_duration_since(Instant::now())
                .min(WRITE_TIMEOUT),
            None => WRITE_TIMEOUT,
        };
        if timeout.is_zero() {
            // Past the shutdown grace: what is left is dropped, and counted.
            batch.clear();
            self.shared.settle(0, n);
            return;
        }
        let mut pipe = redis::Pipeline::with_capacity(batch.len());
        for queued in batch.iter() {
            pipe.cmd("XADD")
                .arg(&self.shared.stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.maxlen)
                .arg("*");
            visit_fields(&queued.event(), &self.source, |name, value| {
                pipe.arg(name);
                match value {
                    FieldValue::Text(t) => pipe.arg(t),
                    FieldValue::Number(v) => pipe.arg(v),
                };
            });
            pipe.ignore();
        }
        batch.clear();
        let client = &self.client;
        let connection = &mut self.connection;
        let result = link::within(timeout, async {
            if connection.is_none() {
                *connection = Some(client.connect(timeout, Some(timeout)).await?);
            }
            match connection.as_mut() {
                Some(c) => pipe.query_async::<()>(c).await,
                None => unreachable!("connected just above"),
            }
        });
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("redis: {e}")),
            Err(_) => Some(format!("no answer from Redis within {timeout:?}")),
        };
        match failure {
            None => {
                *self.shared.last_error.lock() = None;
                self.backoff = Duration::ZERO;
                self.shared.settle(n, 0);
            }
            Some(message) => {
                self.connection = None;
                self.shared.errors.fetch_add(1, Ordering::AcqRel);
                *self.shared.last_error.lock() = Some(format!(
                    "writing {n} events to {}: {message}",
                    self.shared.stream
                ));
                self.shared.settle(0, n);
                self.back_off();
            }
        }
    }

    /// Waits before the next attempt: [`BACKOFF_MIN`], doubling to [`BACKOFF_MAX`]; not at
    /// all once the sink is closing.
    fn back_off(&mut self) {
        self.backoff = if self.backoff.is_zero() {
            BACKOFF_MIN
        } else {
            (self.backoff * 2).min(BACKOFF_MAX)
        };
        let until = Instant::now() + self.backoff;
        let mut state = self.shared.state.lock();
        while state.closing.is_none() {
            if self.shared.wake.wait_until(&mut state, until).timed_out() {
                break;
            }
        }
    }
}
