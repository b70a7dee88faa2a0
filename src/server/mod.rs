//! The front end: one monoio worker thread per core, each with its own
//! SO_REUSEPORT listener on `server.listen`, so the kernel spreads connections
//! across workers and no accept lock is shared.

pub mod conn;
pub mod request;
pub mod response;
pub mod worker;

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use monoio::{FusionDriver, IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::batch::Batch;
use crate::config::Driver;
use worker::{Shared, Worker};

/// Accept backlog per listener; the kernel caps it at net.core.somaxconn.
const LISTEN_BACKLOG: i32 = 4096;

/// The running worker threads.
pub struct Server {
    threads: Vec<JoinHandle<()>>,
    /// The address actually bound (port 0 in the config resolved).
    pub local_addr: SocketAddr,
}

impl Server {
    /// Binds the listeners and starts the workers.
    ///
    /// # Errors
    /// When the address cannot be bound or a thread cannot be spawned.
    pub fn start(shared: Arc<Shared>, queues: &[Sender<Arc<Batch>>]) -> io::Result<Server> {
        let requested: SocketAddr = shared.config.server.listen.parse().map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "server.listen is not ip:port")
        })?;
        let workers = shared.config.worker_count();
        // The first bind resolves port 0; the others join it through SO_REUSEPORT.
        let first = bind_reuseport(requested)?;
        let local_addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..workers {
            listeners.push(bind_reuseport(local_addr)?);
        }
        let mut threads = Vec::with_capacity(workers);
        for (id, listener) in listeners.into_iter().enumerate() {
            let shared = shared.clone();
            let queues = queues.to_vec();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("fluxgate-worker-{id}"))
                    .spawn(move || run_worker(id, shared, queues, listener))?,
            );
        }
        Ok(Server {
            threads,
            local_addr,
        })
    }

    /// Waits for every worker to finish draining (after shutdown was requested).
    pub fn join(self) {
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
    }
}

fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

fn run_worker(
    id: usize,
    shared: Arc<Shared>,
    queues: Vec<Sender<Arc<Batch>>>,
    listener: std::net::TcpListener,
) {
    let driver = shared.config.server.driver;
    let serve = move || async move {
        let listener = match monoio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(worker = id, error = %e, "cannot register the listener with the runtime");
                return;
            }
        };
        let worker = Rc::new(Worker::new(id, shared, queues));
        worker.run(listener).await;
    };
    let result = match driver {
        Driver::Auto => RuntimeBuilder::<FusionDriver>::new()
            .enable_timer()
            .build()
            .map(|mut runtime| {
                let name = match &runtime {
                    monoio::FusionRuntime::Uring(_) => "io_uring",
                    monoio::FusionRuntime::Legacy(_) => "epoll",
                };
                tracing::debug!(worker = id, driver = name, "worker started");
                runtime.block_on(serve())
            }),
        Driver::IoUring => RuntimeBuilder::<IoUringDriver>::new()
            .enable_timer()
            .build()
            .map(|mut runtime| runtime.block_on(serve())),
        Driver::Epoll => RuntimeBuilder::<LegacyDriver>::new()
            .enable_timer()
            .build()
            .map(|mut runtime| runtime.block_on(serve())),
    };
    if let Err(e) = result {
        tracing::error!(worker = id, ?driver, error = %e, "cannot start the worker runtime");
    }
}
