//! Waking a monoio worker from another thread: a socket pair whose one end
//! any thread rings with a byte ([`Ring`]) and whose other end a task on the
//! worker's runtime reads ([`Bell::hear`]). Ringing never blocks and is never
//! lost: a full socket already holds rings the worker has yet to read, and
//! one read answers them all.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;

use monoio::io::AsyncReadRent;

/// The ringing end; `Send` and `Sync`.
#[derive(Debug)]
pub struct Ring {
    socket: UnixStream,
}

/// The worker's end.
#[derive(Debug)]
pub struct Bell {
    socket: UnixStream,
}

/// A new doorbell, or the error the system gave for its socket pair.
pub fn doorbell() -> io::Result<(Ring, Bell)> {
    let (ring, bell) = UnixStream::pair()?;
    ring.set_nonblocking(true)?;
    bell.set_nonblocking(true)?;
    Ok((Ring { socket: ring }, Bell { socket: bell }))
}

impl Ring {
    pub fn ring(&self) {
        let _ = (&self.socket).write(&[1]);
    }
}

impl Bell {
    /// Calls `heard` after each read of rings, until the socket fails (the
    /// ringing end is gone); run as a task on the worker's runtime. An error
    /// when the runtime cannot take the socket.
    pub async fn hear(self, mut heard: impl FnMut()) -> io::Result<()> {
        let mut socket = monoio::net::UnixStream::from_std(self.socket)?;
        let mut buf = vec![0u8; 64];
        loop {
            let (read, returned) = socket.read(buf).await;
            buf = returned;
            if !matches!(read, Ok(1..)) {
                return Ok(());
            }
            heard();
        }
    }

    /// Rings waiting to be read, read now (0 when none); off any runtime.
    #[cfg(test)]
    pub fn take_rings(&mut self) -> usize {
        let mut buf = [0u8; 64];
        std::io::Read::read(&mut self.socket, &mut buf).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_are_heard_and_never_block() {
        let (ring, mut bell) = doorbell().unwrap();
        assert_eq!(bell.take_rings(), 0);
        // Far more than the socket holds: the ringer never waits.
        for _ in 0..10_000 {
            ring.ring();
        }
        assert!(bell.take_rings() > 0);
    }

    #[test]
    fn a_task_hears_rings_from_another_thread_on_both_drivers() {
        let hear_one = |block_on: &dyn Fn(Bell, &mut usize)| {
            let (ring, bell) = doorbell().unwrap();
            let ringer = std::thread::spawn(move || ring.ring());
            let mut heard = 0;
            block_on(bell, &mut heard);
            ringer.join().unwrap();
            // The ring, then the end once the ringer is gone.
            assert_eq!(heard, 1);
        };
        hear_one(&|bell, heard| {
            monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .build()
                .unwrap()
                .block_on(bell.hear(|| *heard += 1))
                .unwrap()
        });
        hear_one(&|bell, heard| {
            monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .build()
                .unwrap()
                .block_on(bell.hear(|| *heard += 1))
                .unwrap()
        });
    }
}
