//! Who is asking: proxy users, checked at the edge before a handler runs.
//!
//! Credentials are read the ways InfluxDB reads them (`u`/`p` in the URL,
//! Basic, `Token user:password`, `Token <api token>`). A verification seen
//! before is answered on the worker from `Users`' cache; a new one runs
//! PBKDF2 (about 0.1 s) on the verifier thread, so a wrong password never
//! stalls the worker's other connections.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

use crate::auth::{AuthError, Identity, OwnedCredentials, Users};
use crate::error::ApiError;
use crate::generation::Generation;
use crate::server::request::Head;
use crate::urlencoded;

/// What an endpoint asks of its caller once there are `[[users]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Open,
    User,
    Admin,
}

/// Slow verifications waiting for the verifier thread; beyond, 503: a
/// password-guessing flood costs its senders, not every client.
const VERIFIER_QUEUE: usize = 256;
const VERIFY_POLL: Duration = Duration::from_millis(2);
/// Longest wait for a slow verification (queue included), then 503. One
/// takes 0.1 s in a release build at the default rounds, seconds in a debug
/// build on a busy machine.
const VERIFY_WAIT: Duration = Duration::from_secs(30);

struct Verification {
    users: Arc<Users>,
    credentials: OwnedCredentials,
    reply: Sender<Result<Identity, AuthError>>,
    /// Set when the request stopped waiting: the verifier skips the job.
    abandoned: Arc<AtomicBool>,
}

/// Marks a verification abandoned when its request stops waiting for it
/// (answered, timed out, or the connection went away).
struct AbandonOnDrop(Arc<AtomicBool>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Checks the request's credentials against `access`. `None` when fluxgate
/// has no users (or the endpoint is open): everything is allowed.
///
/// # Errors
/// 401 (`ApiError::Unauthorized`) for missing, unreadable or wrong
/// credentials, 403 for a user that is not an admin where one is needed.
pub async fn authorize(
    generation: &Generation,
    head: &Head,
    buf: &[u8],
    access: Access,
) -> Result<Option<Identity>, ApiError> {
    if access == Access::Open || !generation.users.is_enabled() {
        return Ok(None);
    }
    let (user, password) = user_and_password(head.query(buf));
    let credentials = crate::auth::credentials(
        head.authorization(buf),
        user.as_deref(),
        password.as_deref(),
    )
    .map_err(ApiError::Unauthorized)?;
    let identity = match generation.users.try_authenticate(&credentials) {
        Some(outcome) => outcome,
        None => verify_off_worker(&generation.users, credentials.to_owned_credentials()).await?,
    }
    .map_err(ApiError::Unauthorized)?;
    if access == Access::Admin && !identity.admin {
        return Err(ApiError::Forbidden(format!(
            "{} is not an admin: this endpoint requires admin privilege",
            identity.name
        )));
    }
    Ok(Some(identity))
}

/// Whether a request for a user endpoint (`/write`) would pass [`authorize`]
/// without waiting: no users are configured, or its credentials were
/// verified before (a first verification, PBKDF2, is never started here).
pub fn is_known_writer(generation: &Generation, head: &Head, buf: &[u8]) -> bool {
    if !generation.users.is_enabled() {
        return true;
    }
    let (user, password) = user_and_password(head.query(buf));
    let Ok(credentials) = crate::auth::credentials(
        head.authorization(buf),
        user.as_deref(),
        password.as_deref(),
    ) else {
        return false;
    };
    matches!(generation.users.try_authenticate(&credentials), Some(Ok(_)))
}

/// The decoded `u` and `p` query parameters (InfluxDB reads them from the URL only).
fn user_and_password(query: &str) -> (Option<String>, Option<String>) {
    let (mut user, mut password) = (None, None);
    for (key, value) in urlencoded::pairs(query) {
        match key {
            "u" => user = urlencoded::decode(value),
            "p" => password = urlencoded::decode(value),
            _ => {}
        }
    }
    (user, password)
}

async fn verify_off_worker(
    users: &Arc<Users>,
    credentials: OwnedCredentials,
) -> Result<Result<Identity, AuthError>, ApiError> {
    let (reply, outcome): (_, Receiver<Result<Identity, AuthError>>) =
        crossbeam_channel::bounded(1);
    let abandoned = Arc::new(AtomicBool::new(false));
    let _abandon_on_drop = AbandonOnDrop(abandoned.clone());
    let job = Verification {
        users: users.clone(),
        credentials,
        reply,
        abandoned,
    };
    match verifier().try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return Err(ApiError::Unavailable(
                "too many authentications in progress; retry later".into(),
            ))
        }
        Err(TrySendError::Disconnected(_)) => {
            return Err(ApiError::Unavailable("the verifier thread stopped".into()))
        }
    }
    let started = std::time::Instant::now();
    loop {
        match outcome.try_recv() {
            Ok(result) => return Ok(result),
            Err(TryRecvError::Empty) if started.elapsed() >= VERIFY_WAIT => {
                return Err(ApiError::Unavailable(
                    "authentication is busy; retry later".into(),
                ))
            }
            Err(TryRecvError::Empty) => monoio::time::sleep(VERIFY_POLL).await,
            Err(TryRecvError::Disconnected) => {
                return Err(ApiError::Unavailable("the verifier thread stopped".into()))
            }
        }
    }
}

/// The verifier thread's queue, started on first use.
fn verifier() -> &'static Sender<Verification> {
    static QUEUE: OnceLock<Sender<Verification>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (sender, jobs) = crossbeam_channel::bounded::<Verification>(VERIFIER_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("fluxgate-verifier".into())
            .spawn(move || {
                for job in jobs {
                    if job.abandoned.load(Ordering::Relaxed) {
                        continue;
                    }
                    let outcome = job.users.authenticate(&job.credentials.as_credentials());
                    let _ = job.reply.send(outcome);
                }
            });
        if let Err(e) = spawned {
            // The queue's receiver is gone with the closure: requests get 503.
            tracing::error!(error = %e, "cannot start the password verifier thread");
        }
        sender
    })
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::auth::{hash_secret_with_iterations, hash_token, UserConfig, MIN_ITERATIONS};
    use crate::config::Config;
    use crate::route::Router;
    use crate::server::request::parse_head;

    fn generation(users: &[UserConfig]) -> Generation {
        let config = Config::from_toml(
            "[[backends]]\nname = \"a\"\nurl = \"http://h:1\"\n[routes]\n_default_ = [\"a\"]",
        )
        .unwrap();
        Generation {
            id: 1,
            router: Arc::new(Router::new(&config)),
            config,
            source: "test".into(),
            applied_at: SystemTime::now(),
            backends: Vec::new(),
            users: Arc::new(Users::new(users).unwrap()),
        }
    }

    /// Whether a write with these extra head lines (and query) is known.
    fn known(generation: &Generation, query: &str, headers: &str) -> bool {
        let buf = format!("POST /write?db=x{query} HTTP/1.1\r\nHost: h\r\n{headers}\r\n");
        let head = parse_head(buf.as_bytes(), 8192, 1 << 20).unwrap().unwrap();
        is_known_writer(generation, &head, buf.as_bytes())
    }

    #[test]
    fn only_clients_verified_before_are_known_writers() {
        assert!(known(&generation(&[]), "", ""), "no users: everyone");
        let generation = generation(&[
            UserConfig {
                name: "bot".into(),
                password_hash: None,
                token_hash: Some(hash_token("tok-bot")),
                admin: false,
            },
            UserConfig {
                name: "joe".into(),
                password_hash: Some(hash_secret_with_iterations("pw", MIN_ITERATIONS).unwrap()),
                token_hash: None,
                admin: false,
            },
        ]);
        // A token checked on the spot.
        assert!(known(&generation, "", "Authorization: Token tok-bot\r\n"));
        assert!(!known(&generation, "", "Authorization: Token nope\r\n"));
        assert!(!known(&generation, "", ""));
        // A password needs PBKDF2 the first time: not here, only once it passed.
        assert!(!known(&generation, "&u=joe&p=pw", ""));
        let credentials = crate::auth::credentials(None, Some("joe"), Some("pw")).unwrap();
        assert!(generation.users.authenticate(&credentials).is_ok());
        assert!(known(&generation, "&u=joe&p=pw", ""));
        assert!(!known(&generation, "&u=joe&p=wrong", ""));
    }
}
