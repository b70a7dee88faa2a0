//! The front end: one monoio worker thread per core, each with its own
//! SO_REUSEPORT listener on `server.listen`, so the kernel spreads connections
//! across workers and no accept lock is shared; a worker that gets more than
//! its share hands new ones over (`handoff`).

pub mod admission;
pub mod conn;
pub mod handoff;
pub mod request;
pub mod response;
pub mod worker;

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;

use monoio::{FusionDriver, IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::config::Driver;
use worker::{Shared, Worker};

/// Accept backlog per listener; the kernel caps it at net.core.somaxconn.
const LISTEN_BACKLOG: i32 = 4096;

/// The running worker threads.
pub struct Server {
    threads: Vec<JoinHandle<()>>,
    /// The address actually bound (port 0 in the config resolved).
    pub local_addr: SocketAddr,
    /// The I/O driver the workers run on: "io_uring" or "epoll".
    pub driver: &'static str,
}

impl Server {
    /// Binds the listeners and starts the workers.
    ///
    /// # Errors
    /// When the address cannot be bound or a thread cannot be spawned.
    pub fn start(shared: Arc<Shared>) -> io::Result<Server> {
        let config = shared.current.load().config.clone();
        let requested: SocketAddr = config.server.listen.parse().map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "server.listen is not ip:port")
        })?;
        let workers = config.worker_count();
        // The first bind resolves port 0; the others join it through SO_REUSEPORT.
        let first = bind_reuseport(requested)?;
        let local_addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..workers {
            listeners.push(bind_reuseport(local_addr)?);
        }
        let mut threads = Vec::with_capacity(workers);
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        for (id, listener) in listeners.into_iter().enumerate() {
            let shared = shared.clone();
            let driver = config.server.driver;
            let started = started_tx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("fluxgate-worker-{id}"))
                    .spawn(move || run_worker(id, shared, driver, listener, &started))?,
            );
        }
        // Report a worker that cannot start (no io_uring with driver = "io_uring",
        // say) as a start-up error instead of serving with fewer workers.
        let mut drivers = Vec::with_capacity(workers);
        for _ in 0..workers {
            match started_rx.recv() {
                Ok(Ok(driver)) => drivers.push(driver),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::other("a worker thread ended during start-up")),
            }
        }
        Ok(Server {
            threads,
            local_addr,
            driver: drivers[0],
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

/// Runs one worker until it has drained. Sends the driver's name on `started`
/// once the runtime and listener are up, or the error that stopped them.
fn run_worker(
    id: usize,
    shared: Arc<Shared>,
    driver: Driver,
    listener: std::net::TcpListener,
    started: &std::sync::mpsc::Sender<io::Result<&'static str>>,
) {
    let serve = |driver: &'static str| async move {
        let listener = match monoio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        };
        let worker = Rc::new(Worker::new(id, shared));
        let _ = started.send(Ok(driver));
        worker.run(listener, driver).await;
    };
    let built = match driver {
        Driver::Auto => RuntimeBuilder::<FusionDriver>::new()
            .enable_timer()
            .build()
            .map(|mut runtime| {
                let name = match &runtime {
                    monoio::FusionRuntime::Uring(_) => "io_uring",
                    monoio::FusionRuntime::Legacy(_) => "epoll",
                };
                runtime.block_on(serve(name));
            }),
        Driver::IoUring => RuntimeBuilder::<IoUringDriver>::new()
            .enable_timer()
            .build()
            .map(|mut runtime| runtime.block_on(serve("io_uring"))),
        Driver::Epoll => RuntimeBuilder::<LegacyDriver>::new()
            .enable_timer()
            .build()
            .map(|mut runtime| runtime.block_on(serve("epoll"))),
    };
    if let Err(e) = built {
        let _ = started.send(Err(io::Error::new(
            e.kind(),
            format!("cannot start a {driver:?} runtime for worker {id}: {e}"),
        )));
    }
}
