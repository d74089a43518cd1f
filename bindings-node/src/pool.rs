//! The worker threads that run calls which may wait on Redis, so that the JS thread never
//! does. Started on first use; [`MAX_WORKERS`] at most, one more each time every worker is
//! busy. A call waiting on Redis holds its worker, and concurrent calls share (pipeline on)
//! the store's one connection, so up to [`MAX_WORKERS`] round trips are in flight at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::OnceLock;

use parking_lot::{Condvar, Mutex};

/// The most worker threads the addon starts.
pub(crate) const MAX_WORKERS: usize = 64;

type Job = Box<dyn FnOnce() + Send + 'static>;

struct Queue {
    jobs: VecDeque<Job>,
    workers: usize,
    idle: usize,
}

struct Pool {
    queue: Mutex<Queue>,
    ready: Condvar,
}

fn pool() -> &'static Arc<Pool> {
    static POOL: OnceLock<Arc<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        Arc::new(Pool {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                workers: 0,
                idle: 0,
            }),
            ready: Condvar::new(),
        })
    })
}

/// Runs `job` on a worker thread.
pub(crate) fn spawn(job: impl FnOnce() + Send + 'static) {
    let pool = pool();
    let mut queue = pool.queue.lock();
    queue.jobs.push_back(Box::new(job));
    if queue.idle == 0 && queue.workers < MAX_WORKERS {
        queue.workers += 1;
        let worker = Arc::clone(pool);
        let started = std::thread::Builder::new()
            .name("floodwall-worker".to_owned())
            .spawn(move || work(&worker));
        if started.is_err() {
            queue.workers -= 1;
        }
    }
    drop(queue);
    pool.ready.notify_one();
}

fn work(pool: &Pool) {
    loop {
        let job = {
            let mut queue = pool.queue.lock();
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                queue.idle += 1;
                pool.ready.wait(&mut queue);
                queue.idle -= 1;
            }
        };
        job();
    }
}
