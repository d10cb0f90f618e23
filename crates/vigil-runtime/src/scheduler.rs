//! The admission queue and dynamic batcher in front of each loaded model.
//!
//! Requests wait in a bounded queue (full: `Overloaded`, which the adapters turn
//! into 503 with `Retry-After`); `instances` worker threads take them off it, and
//! never more than `instances` runs of the model happen at once.
//!
//! One exception to the queue: a quick model (its recent runs took at most
//! [`INLINE_MAX`] for the rows asked), without batching, runs a request on the
//! caller's own thread when an instance is free and the caller's [`Inline`]
//! allows it. Handing a run of a few microseconds to a worker thread and back
//! costs two thread wake-ups, several times the run itself: at one request at
//! a time that is most of the latency (measured over HTTP with the demo model
//! at one connection: p50 about 110 µs against 168). Under load it depends on
//! the protocol: HTTP/1.1 handlers run there whenever an instance is free and
//! nothing is queued ([`Inline::WhenFree`]), gRPC ones only once requests have
//! come one at a time for [`SOLO_HOLD`] ([`Inline::WhenAlone`]).
//! [`INLINE_MAX`] is within what an async runtime's thread may spend between
//! awaits; slower models always queue.
//!
//! With batching on, a worker gathers requests for up to
//! `max_queue_delay` (or until `max_batch_size` rows, or a preferred size with
//! nothing else waiting), joins them along the first axis, runs the model once
//! and hands each caller its own rows back. A request whose deadline passes while
//! it waits is answered `DeadlineExceeded` without running.

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use vigil_core::{Error, ErrorCode, LoadedModel, Signature, Tensor, TensorData};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Worker threads (and so concurrent runs of the model); at least 1.
    pub instances: usize,
    /// Requests that may wait; more are refused with `Overloaded`.
    pub max_queue_size: usize,
    pub batching: Option<Batching>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batching {
    /// Most rows (first-axis length, summed over requests) in one run.
    pub max_batch_size: usize,
    /// How long the first request of a batch may wait for others.
    pub max_queue_delay: Duration,
    /// Batch sizes worth running at once, without waiting for the delay.
    pub preferred_batch_sizes: Vec<usize>,
}

/// A request's outputs and where its time went.
#[derive(Debug)]
pub struct Timed {
    pub outputs: Vec<Tensor>,
    /// Waiting in the queue (and for a batch to fill).
    pub queued: Duration,
    /// Running the model (the whole batch, when batched).
    pub ran: Duration,
    /// The rows of the model run this request was part of, given on one
    /// request of each run only, so that counting runs counts each once.
    pub batch: Option<usize>,
}

struct Job {
    inputs: Vec<Tensor>,
    deadline: Option<Instant>,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Timed, Error>>,
}

impl Job {
    fn rows(&self) -> usize {
        rows(&self.inputs)
    }
}

/// The first-axis length of a request (1 for scalars).
fn rows(inputs: &[Tensor]) -> usize {
    inputs.first().and_then(|t| t.shape.first().copied()).unwrap_or(1)
}

/// The longest run (by its recent cost per row) that may happen on the
/// caller's thread instead of a worker's. Tokio's guidance for time between
/// awaits is 10 to 100 µs.
pub const INLINE_MAX: Duration = Duration::from_micros(100);

/// How long a model's requests must have come one at a time before they run
/// on the callers' threads, for callers that ask for [`Inline::WhenAlone`].
pub const SOLO_HOLD: Duration = Duration::from_millis(100);

/// When a quick, unbatched model's request may run on its caller's thread.
/// Which is cheaper under load depends on the caller's protocol stack
/// (bench/RESULTS.md): over HTTP/1.1 running there costs less CPU per
/// request (16 connections: 21–23 µs against 26–27, 9–11 % more
/// throughput); over gRPC (HTTP/2) answers go out in fewer writes when runs
/// go through the queue (25–27k req/s inline against 34–37k).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Inline {
    /// Whenever an instance is free and nothing is queued (those waiting go first).
    #[default]
    WhenFree,
    /// Only once requests have come one at a time for [`SOLO_HOLD`].
    WhenAlone,
}

pub struct Scheduler {
    queue: Sender<Job>,
    max_queue_size: usize,
    max_batch_size: Option<usize>,
    shared: Arc<Shared>,
}

/// What the scheduler and its workers share: the model, its instances, and
/// how long its runs take.
struct Shared {
    model: Arc<dyn LoadedModel>,
    /// One token per instance: whoever runs the model holds one.
    instances: Slots,
    traffic: Traffic,
    pace: Pace,
}

/// Whether the model's requests come one at a time.
struct Traffic {
    /// Requests between entering [`Scheduler::infer`] and their answer (or
    /// their caller giving up).
    in_flight: AtomicUsize,
    epoch: Instant,
    /// When (nanoseconds after `epoch`) a request last came while another
    /// was in flight.
    overlapped: AtomicU64,
}

/// One request counted in [`Traffic::in_flight`] while it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Traffic {
    fn new() -> Self {
        Traffic { in_flight: AtomicUsize::new(0), epoch: Instant::now(), overlapped: AtomicU64::new(0) }
    }

    /// Counts a request in; says whether requests have come one at a time
    /// for [`SOLO_HOLD`] (none overlapped this one or any since then).
    fn enter(&self) -> (InFlight<'_>, bool) {
        let others = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let solo = if others > 0 {
            self.overlapped.store(now, Ordering::Relaxed);
            false
        } else {
            now.saturating_sub(self.overlapped.load(Ordering::Relaxed)) >= SOLO_HOLD.as_nanos() as u64
        };
        (InFlight(&self.in_flight), solo)
    }
}

impl Shared {
    /// Runs the model, turning a panic into an error for this request only,
    /// and notes how long it took.
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, Error> {
        let (rows, started) = (rows(&inputs), Instant::now());
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.model.infer(inputs)))
            .unwrap_or_else(|_| Err(Error::new(ErrorCode::InferenceFailed, "the backend panicked on this request")));
        self.pace.record(started.elapsed(), rows);
        result
    }
}

/// A counting semaphore over a channel of tokens: workers block on it,
/// callers on the async runtime only ever try it.
struct Slots {
    give: Sender<()>,
    take: Receiver<()>,
}

/// A held instance, given back when dropped (a panic included).
struct Slot<'a>(&'a Slots);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let _ = self.0.give.try_send(());
    }
}

impl Slots {
    fn new(n: usize) -> Self {
        let (give, take) = bounded(n);
        for _ in 0..n {
            let _ = give.try_send(());
        }
        Slots { give, take }
    }

    fn try_take(&self) -> Option<Slot<'_>> {
        self.take.try_recv().ok().map(|()| Slot(self))
    }

    /// Blocks until an instance is free (`Slots` holds a sender, so this
    /// never fails).
    fn wait(&self) -> Slot<'_> {
        let _ = self.take.recv();
        Slot(self)
    }
}

/// A moving average of the model's run time per row, in nanoseconds.
struct Pace(AtomicU64);

impl Pace {
    /// No run has finished yet: nothing runs inline until one has.
    const UNKNOWN: u64 = u64::MAX;

    fn record(&self, took: Duration, rows: usize) {
        let sample = u64::try_from(took.as_nanos() / rows.max(1) as u128).unwrap_or(u64::MAX - 1);
        let old = self.0.load(Ordering::Relaxed);
        // Weight 1/8 for the newest run. Two runs finishing at once may lose
        // one sample; an estimate needs no more.
        let new = if old == Self::UNKNOWN { sample } else { old - old / 8 + sample / 8 };
        self.0.store(new.min(u64::MAX - 1), Ordering::Relaxed);
    }

    /// Whether a run of `rows` rows is expected to take at most [`INLINE_MAX`].
    fn quick(&self, rows: usize) -> bool {
        let per_row = self.0.load(Ordering::Relaxed);
        per_row != Self::UNKNOWN && per_row.saturating_mul(rows as u64) <= INLINE_MAX.as_nanos() as u64
    }
}

impl Scheduler {
    /// Starts the workers. Batching needs every input and output to have a
    /// dynamic first dimension (the batch); otherwise this is an error.
    pub fn start(
        model: Arc<dyn LoadedModel>,
        signature: &Signature,
        config: &SchedulerConfig,
        name: &str,
    ) -> Result<Self, String> {
        if config.batching.is_some() && !batchable(signature) {
            return Err("batching needs a dynamic first dimension (-1) on every input and output".into());
        }
        let (queue, jobs) = bounded::<Job>(config.max_queue_size);
        let instances = config.instances.max(1);
        let shared = Arc::new(Shared {
            model,
            instances: Slots::new(instances),
            traffic: Traffic::new(),
            pace: Pace(AtomicU64::new(Pace::UNKNOWN)),
        });
        for i in 0..instances {
            let worker = Worker { shared: Arc::clone(&shared), jobs: jobs.clone(), batching: config.batching.clone() };
            std::thread::Builder::new()
                .name(format!("vigil-{name}-{i}"))
                .spawn(move || worker.run())
                .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        }
        Ok(Scheduler {
            queue,
            max_queue_size: config.max_queue_size,
            max_batch_size: config.batching.as_ref().map(|b| b.max_batch_size),
            shared,
        })
    }

    /// Requests waiting for a worker now (the queue depth).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Runs `inputs` (in signature order, already checked): here when the
    /// model is quick and free (see the module's notes), else through the
    /// queue, waiting for the outputs or until `deadline`.
    pub async fn infer(&self, inputs: Vec<Tensor>, deadline: Option<Instant>, inline: Inline) -> Result<Timed, Error> {
        if let Some(max) = self.max_batch_size {
            // Rows of one request are rows of one batch: every input must have
            // the same number, or callers' rows would be mixed up.
            let rows = inputs.first().and_then(|t| t.shape.first().copied()).unwrap_or(0);
            if let Some(t) = inputs.iter().find(|t| t.shape.first() != Some(&rows)) {
                return Err(Error::invalid_input(format!(
                    "input '{}' has {} rows but '{}' has {rows}: a batched model takes the same number in every input",
                    t.name,
                    t.shape.first().copied().unwrap_or(0),
                    inputs[0].name
                )));
            }
            if rows > max {
                return Err(Error::invalid_input(format!("{rows} rows is over the model's max_batch_size ({max})")));
            }
        }
        // Every caller counts in, whatever its rule, so that `WhenAlone`
        // callers see overlaps from the others too.
        let (_counted, solo) = self.shared.traffic.enter();
        let here = match inline {
            Inline::WhenFree => self.queue.is_empty(),
            Inline::WhenAlone => solo,
        };
        let inputs = match self.run_here(inputs, deadline, here) {
            Ok(done) => return done,
            Err(inputs) => inputs,
        };
        let (reply, answer) = oneshot::channel();
        self.queue.try_send(Job { inputs, deadline, enqueued: Instant::now(), reply }).map_err(|e| match e {
            TrySendError::Full(_) => Error::new(
                ErrorCode::Overloaded,
                format!("the model's queue is full ({} requests waiting); retry shortly", self.max_queue_size),
            ),
            TrySendError::Disconnected(_) => Error::new(ErrorCode::Internal, "the model's workers have stopped"),
        })?;
        let answer = async {
            answer.await.map_err(|_| Error::new(ErrorCode::InferenceFailed, "the backend panicked on this request"))?
        };
        match deadline {
            None => answer.await,
            // Past the deadline the caller stops waiting; a job not yet started is then skipped.
            Some(d) => tokio::time::timeout_at(d.into(), answer).await.unwrap_or_else(|_| Err(deadline_exceeded())),
        }
    }

    /// Runs a request on this thread when the caller's [`Inline`] allows it
    /// (`here`) and the model is quick, unbatched and has an instance free (a
    /// run whose caller gave up may hold one); otherwise gives the inputs
    /// back, to be queued.
    fn run_here(
        &self,
        inputs: Vec<Tensor>,
        deadline: Option<Instant>,
        here: bool,
    ) -> Result<Result<Timed, Error>, Vec<Tensor>> {
        let rows = rows(&inputs);
        let shared = &self.shared;
        if !here || self.max_batch_size.is_some() || !shared.pace.quick(rows) {
            return Err(inputs);
        }
        let Some(_instance) = shared.instances.try_take() else { return Err(inputs) };
        let started = Instant::now();
        if deadline.is_some_and(|d| d <= started) {
            return Ok(Err(deadline_exceeded()));
        }
        let outputs = shared.run(inputs);
        Ok(outputs.map(|outputs| Timed { outputs, queued: Duration::ZERO, ran: started.elapsed(), batch: Some(rows) }))
    }
}

fn deadline_exceeded() -> Error {
    Error::new(ErrorCode::DeadlineExceeded, "the request's deadline passed before the model could run it")
}

fn batchable(signature: &Signature) -> bool {
    let dynamic_first = |s: &vigil_core::TensorSpec| s.shape.first() == Some(&-1);
    signature.inputs.iter().all(dynamic_first) && signature.outputs.iter().all(dynamic_first)
}

struct Worker {
    shared: Arc<Shared>,
    jobs: Receiver<Job>,
    batching: Option<Batching>,
}

impl Worker {
    fn run(self) {
        // A job taken off the queue that did not fit the last batch starts the next.
        let mut carried: Option<Job> = None;
        loop {
            let first = match carried.take() {
                Some(job) => job,
                None => match self.jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return, // the scheduler is gone: the model was unloaded
                },
            };
            let mut batch = vec![first];
            if let Some(b) = &self.batching {
                carried = self.gather(b, &mut batch);
            }
            // A request running on its caller's thread may hold the instance.
            let _instance = self.shared.instances.wait();
            for group in same_shapes(batch) {
                // Jobs whose caller gave up or whose deadline passed (perhaps
                // while an earlier group ran) are not run.
                let now = Instant::now();
                let (skip, live): (Vec<Job>, Vec<Job>) =
                    group.into_iter().partition(|j| j.reply.is_closed() || j.deadline.is_some_and(|d| d <= now));
                for job in skip {
                    let _ = job.reply.send(Err(deadline_exceeded()));
                }
                if !live.is_empty() {
                    // Whatever goes wrong in one batch must not end this worker:
                    // the callers in it are answered (or see their sender dropped).
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_group(live)));
                }
            }
        }
    }

    /// Adds waiting jobs to `batch` within the batching limits; returns a job
    /// that was taken but would have made the batch too large.
    fn gather(&self, b: &Batching, batch: &mut Vec<Job>) -> Option<Job> {
        let mut until = Instant::now() + b.max_queue_delay;
        if let Some(soonest) = batch.iter().filter_map(|j| j.deadline).min() {
            until = until.min(soonest);
        }
        let mut rows: usize = batch.iter().map(Job::rows).sum();
        while rows < b.max_batch_size {
            let next = if b.preferred_batch_sizes.contains(&rows) {
                // A good size already: take only what is waiting right now.
                match self.jobs.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            } else {
                match self.jobs.recv_deadline(until) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            };
            if rows + next.rows() > b.max_batch_size {
                return Some(next);
            }
            rows += next.rows();
            if let Some(d) = next.deadline {
                until = until.min(d);
            }
            batch.push(next);
        }
        None
    }

    fn run_group(&self, mut group: Vec<Job>) {
        if group.len() == 1 {
            let job = group.remove(0);
            self.run_alone(job);
            return;
        }
        let rows: Vec<usize> = group.iter().map(Job::rows).collect();
        let inputs: Vec<Vec<Tensor>> = group.iter().map(|j| j.inputs.clone()).collect();
        let started = Instant::now();
        match self.infer_batch(inputs, &rows) {
            Ok(per_job) => {
                let ran = started.elapsed();
                let mut batch = Some(rows.iter().sum());
                for (job, outputs) in group.into_iter().zip(per_job) {
                    let queued = started.saturating_duration_since(job.enqueued);
                    let _ = job.reply.send(Ok(Timed { outputs, queued, ran, batch: batch.take() }));
                }
            }
            // One request's bad data must not fail the others batched with it:
            // run each alone, so that each gets its own answer.
            Err(_) => {
                for job in group {
                    self.run_alone(job);
                }
            }
        }
    }

    fn run_alone(&self, job: Job) {
        let started = Instant::now();
        let batch = Some(job.rows());
        let result = self.shared.run(job.inputs);
        let (queued, ran) = (started.saturating_duration_since(job.enqueued), started.elapsed());
        let _ = job.reply.send(result.map(|outputs| Timed { outputs, queued, ran, batch }));
    }

    /// Joins the jobs' inputs along the first axis, runs once, splits the outputs.
    fn infer_batch(&self, jobs: Vec<Vec<Tensor>>, rows: &[usize]) -> Result<Vec<Vec<Tensor>>, Error> {
        let internal = |m: &str| Error::new(ErrorCode::Internal, format!("batching: {m}"));
        let total: usize = rows.iter().sum();
        let n_inputs = jobs[0].len();
        let mut columns: Vec<Vec<Tensor>> = (0..n_inputs).map(|_| Vec::with_capacity(jobs.len())).collect();
        for job in jobs {
            for (i, t) in job.into_iter().enumerate() {
                columns[i].push(t);
            }
        }
        let mut merged = Vec::with_capacity(n_inputs);
        for column in columns {
            let mut shape = column[0].shape.clone();
            shape[0] = total;
            let name = column[0].name.clone();
            let data = TensorData::concat(column.into_iter().map(|t| t.data).collect())
                .ok_or_else(|| internal("inputs of different datatypes"))?;
            merged.push(Tensor::new(name, shape, data).map_err(|e| internal(&e))?);
        }
        let outputs = self.shared.run(merged)?;
        let mut per_job: Vec<Vec<Tensor>> = rows.iter().map(|_| Vec::with_capacity(outputs.len())).collect();
        for out in outputs {
            if out.shape.first() != Some(&total) {
                return Err(internal(&format!("output '{}' does not have the batch's {total} rows", out.name)));
            }
            let row_len: usize = out.shape[1..].iter().product();
            let counts: Vec<usize> = rows.iter().map(|r| r.saturating_mul(row_len)).collect();
            let parts = out.data.split(&counts).ok_or_else(|| internal("output size"))?;
            for ((job, part), &r) in per_job.iter_mut().zip(parts).zip(rows) {
                let mut shape = out.shape.clone();
                shape[0] = r;
                job.push(Tensor::new(out.name.clone(), shape, part).map_err(|e| internal(&e))?);
            }
        }
        Ok(per_job)
    }
}

/// Splits jobs into groups whose inputs agree on every dimension but the first
/// (only those can be joined), keeping arrival order within each group.
fn same_shapes(jobs: Vec<Job>) -> Vec<Vec<Job>> {
    let mut groups: Vec<(Vec<Vec<usize>>, Vec<Job>)> = Vec::new();
    for job in jobs {
        let key: Vec<Vec<usize>> = job.inputs.iter().map(|t| t.shape.iter().skip(1).copied().collect()).collect();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.push(job),
            None => groups.push((key, vec![job])),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}
