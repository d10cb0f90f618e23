//! Where log lines go: the thread that logs appends its formatted line to a
//! shared buffer, and a writer thread of its own writes what has gathered a
//! few milliseconds later, many lines in one `write`.
//!
//! Every inference request logs a line. A writer woken for each line (a
//! channel, as `tracing-appender` does) cost a context switch per request on
//! a writer thread that competes with the request threads for the cores:
//! about 12 µs of CPU a request at one connection and 2–3 µs at sixteen on
//! the demo model, against 0.1–0.2 µs here (bench/RESULTS.md). Here the writer is woken once per batch:
//! by the first line into an empty buffer, then it lets lines gather for
//! [`GATHER`] (or until [`WAKE_AT`] bytes wait) before writing them.
//!
//! Lossless against a slow output: when it is stuck and [`BLOCK_AT`] bytes
//! wait, loggers wait for room rather than lines going missing (a failed
//! write loses its batch: there is nowhere left to report it). Lines logged
//! after the [`WriterGuard`] is dropped are not written.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tracing_subscriber::fmt::MakeWriter;

/// How long lines gather after the writer wakes before they are written.
/// A line waits about this long, or longer while an earlier batch is still
/// being written.
pub const GATHER: Duration = Duration::from_millis(5);
/// Bytes waiting that have the writer write at once, without gathering more.
pub const WAKE_AT: usize = 64 * 1024;
/// Bytes waiting past which loggers wait (the output does not keep up).
pub const BLOCK_AT: usize = 8 * 1024 * 1024;
/// How long dropping the [`WriterGuard`] waits for the last lines to be
/// written (stderr may be a pipe nobody reads) before giving up on them.
pub const LAST_WRITE: Duration = Duration::from_secs(1);

/// The writer for `tracing_subscriber::fmt().with_writer(..)`.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Writes the lines still waiting and stops the writer thread when dropped.
#[must_use = "dropping the guard stops the writer: lines logged afterwards are not written"]
pub struct WriterGuard {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// The writer waits on this for lines.
    wake: Condvar,
    /// Loggers wait on this for room, and the guard for the writer to finish.
    room: Condvar,
    limits: Limits,
}

#[derive(Clone, Copy)]
struct Limits {
    gather: Duration,
    wake_at: usize,
    block_at: usize,
}

#[derive(Default)]
struct State {
    waiting: Vec<u8>,
    /// Loggers waiting for room (so that the writer only signals when one is).
    blocked: usize,
    /// The guard was dropped: write what waits, then stop.
    stopping: bool,
    /// The writer thread has ended (or died): nothing more will be written.
    finished: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts the writer thread, which writes to `out`.
#[must_use = "the guard must live as long as lines are logged"]
pub fn spawn(out: impl Write + Send + 'static) -> io::Result<(LogWriter, WriterGuard)> {
    spawn_with(out, Limits { gather: GATHER, wake_at: WAKE_AT, block_at: BLOCK_AT })
}

fn spawn_with(out: impl Write + Send + 'static, limits: Limits) -> io::Result<(LogWriter, WriterGuard)> {
    let shared = Arc::new(Shared { state: Mutex::default(), wake: Condvar::new(), room: Condvar::new(), limits });
    let writer = Arc::clone(&shared);
    std::thread::Builder::new().name("vigil-log-writer".into()).spawn(move || {
        let _finished = Finished(&writer);
        write_lines(&writer, out);
    })?;
    Ok((LogWriter { shared: Arc::clone(&shared) }, WriterGuard { shared }))
}

/// Marks the writer finished when its thread ends, a panic included, so
/// that loggers never wait for a writer that is gone.
struct Finished<'a>(&'a Shared);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.finished = true;
        state.waiting = Vec::new();
        drop(state);
        self.0.room.notify_all();
    }
}

/// The writer thread: waits for a line, lets more gather, writes them all;
/// once stopping, writes what waits one last time.
fn write_lines(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::new();
    loop {
        let mut state = shared.lock();
        while state.waiting.is_empty() && !state.stopping {
            state = shared.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        let deadline = Instant::now() + shared.limits.gather;
        while !state.stopping && state.waiting.len() < shared.limits.wake_at {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = shared.wake.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        let last = state.stopping;
        std::mem::swap(&mut state.waiting, &mut batch);
        let blocked = state.blocked > 0;
        drop(state);
        if blocked {
            shared.room.notify_all();
        }
        // Nowhere to report a failed write to: the log is where failures go.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        if last {
            return;
        }
        batch.clear();
        // A burst's buffer is not kept for ever.
        if batch.capacity() > 4 * shared.limits.wake_at {
            batch = Vec::new();
        }
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.stopping = true;
        self.shared.wake.notify_one();
        let deadline = Instant::now() + LAST_WRITE;
        while !state.finished {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return; // stuck output: the thread is left to finish on its own
            }
            state = self.shared.room.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

/// One event's line: tracing-subscriber formats the whole line, then writes
/// it with one `write_all`, so lines from different threads never interleave.
pub struct Line<'a> {
    shared: &'a Shared,
}

impl Write for Line<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let shared = self.shared;
        let mut state = shared.lock();
        while state.waiting.len() >= shared.limits.block_at && !state.stopping && !state.finished {
            state.blocked += 1;
            state = shared.room.wait(state).unwrap_or_else(PoisonError::into_inner);
            state.blocked -= 1;
        }
        if line.is_empty() || state.finished {
            return Ok(line.len());
        }
        let before = state.waiting.len();
        state.waiting.extend_from_slice(line);
        let after = state.waiting.len();
        drop(state);
        // Only the first line of a batch wakes the writer (and a batch grown
        // past `wake_at`): the lines between cost no system call.
        if before == 0 || (before < shared.limits.wake_at && after >= shared.limits.wake_at) {
            shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line { shared: &self.shared }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// An output that hands each write to the test.
    struct Sink(mpsc::Sender<Vec<u8>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.0.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn log(writer: &LogWriter, line: &str) {
        writer.make_writer().write_all(line.as_bytes()).expect("logging never fails");
    }

    /// Lines gather for a minute unless something cuts that short.
    const FOR_EVER: Duration = Duration::from_secs(60);

    #[test]
    fn lines_from_many_threads_all_arrive_whole_and_in_each_threads_order() {
        let (tx, rx) = mpsc::channel();
        let (writer, guard) = spawn(Sink(tx)).expect("spawn");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        log(&writer, &format!("thread {t} line {i} {}\n", "x".repeat(i % 100)));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("logger");
        }
        drop(guard);
        let out = String::from_utf8(rx.iter().flatten().collect()).expect("utf-8");
        let mut next = [0usize; 4];
        for line in out.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            let (t, i): (usize, usize) = (words[1].parse().expect("thread"), words[3].parse().expect("line"));
            assert_eq!(i, next[t], "thread {t}'s lines out of order");
            assert_eq!(words[4].len(), i % 100, "a line was cut");
            next[t] += 1;
        }
        assert_eq!(next, [5000; 4]);
    }

    #[test]
    fn a_lone_line_is_written_after_the_gather_time() {
        let (tx, rx) = mpsc::channel();
        let (writer, _guard) = spawn(Sink(tx)).expect("spawn");
        let start = Instant::now();
        log(&writer, "alone\n");
        let written = rx.recv_timeout(Duration::from_secs(5)).expect("the line is written on its own");
        assert_eq!(written, b"alone\n");
        assert!(start.elapsed() >= GATHER, "written before lines could gather");
        // A second batch, after the first: the writer waits again, then writes it.
        log(&writer, "later\n");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).expect("second line"), b"later\n");
    }

    #[test]
    fn lines_gather_into_one_write_until_enough_wait() {
        let (tx, rx) = mpsc::channel();
        // "0\n" to "99\n" are 290 bytes: the last line reaches `wake_at`.
        let limits = Limits { gather: FOR_EVER, wake_at: 290, block_at: BLOCK_AT };
        let (writer, _guard) = spawn_with(Sink(tx), limits).expect("spawn");
        for i in 0..100 {
            log(&writer, &format!("{i}\n"));
        }
        let written = rx.recv_timeout(Duration::from_secs(5)).expect("written once wake_at bytes wait");
        assert_eq!(written.iter().filter(|&&b| b == b'\n').count(), 100, "one write for the batch");
    }

    #[test]
    fn dropping_the_guard_writes_what_waits_at_once() {
        let (tx, rx) = mpsc::channel();
        let limits = Limits { gather: FOR_EVER, wake_at: WAKE_AT, block_at: BLOCK_AT };
        let (writer, guard) = spawn_with(Sink(tx), limits).expect("spawn");
        log(&writer, "last words\n");
        let start = Instant::now();
        drop(guard);
        assert!(start.elapsed() < LAST_WRITE, "the drop waited out the gather time");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).expect("written"), b"last words\n");
        // The writer is gone: later lines are dropped, not kept in memory.
        log(&writer, "too late\n");
        assert!(writer.shared.lock().waiting.is_empty());
    }

    /// An output that does not take anything until the test lets it.
    struct Stuck {
        release: mpsc::Receiver<()>,
        taken: Arc<Mutex<usize>>,
    }

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.release.recv();
            *self.taken.lock().expect("lock") += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn loggers_wait_for_a_stuck_output_instead_of_losing_lines() {
        // Rendezvous: each write takes one `release`, handed over only when it runs.
        let (release, stuck) = mpsc::sync_channel(0);
        let taken = Arc::new(Mutex::new(0));
        let out = Stuck { release: stuck, taken: Arc::clone(&taken) };
        let limits = Limits { gather: Duration::ZERO, wake_at: 10, block_at: 100 };
        let (writer, guard) = spawn_with(out, limits).expect("spawn");
        let (done_tx, done) = mpsc::channel();
        let logger = std::thread::spawn(move || {
            for _ in 0..100 {
                log(&writer, "0123456789\n");
            }
            let _ = done_tx.send(());
        });
        // The writer holds one batch while stuck; the rest fill the buffer to
        // its bound, so the logger cannot finish.
        let finished_early = done.recv_timeout(Duration::from_millis(300)).is_ok();
        // Let the output go (before asserting, so that a failure cannot hang
        // the test): every line gets through.
        std::thread::spawn(move || while release.send(()).is_ok() {});
        assert!(!finished_early, "the logger went on past the bound");
        done.recv_timeout(Duration::from_secs(5)).expect("the logger finishes once the output takes lines");
        logger.join().expect("logger");
        drop(guard);
        assert_eq!(*taken.lock().expect("lock"), 1100);
    }

    /// An output that fails the test's way: by panicking.
    struct Panics;

    impl Write for Panics {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            panic!("the output broke");
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_dead_writer_never_blocks_loggers() {
        let limits = Limits { gather: Duration::ZERO, wake_at: 10, block_at: 100 };
        let (writer, guard) = spawn_with(Panics, limits).expect("spawn");
        let (done_tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..1000 {
                log(&writer, "0123456789\n");
            }
            let _ = done_tx.send(());
        });
        done.recv_timeout(Duration::from_secs(5)).expect("loggers go on after the writer died");
        drop(guard);
    }
}
