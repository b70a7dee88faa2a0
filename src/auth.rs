//! Optional proxy users: who may talk to fluxgate, and how they prove it.
//!
//! With no `[[users]]` in the config, [`Users::is_enabled`] is false and every
//! request is let through, as before. With users, a request must carry
//! credentials in one of the forms InfluxDB 1.x accepts, read in InfluxDB's
//! order by [`credentials`] (`parseCredentials` in InfluxDB's
//! [handler.go](https://github.com/influxdata/influxdb/blob/001da287d6b080943d8f92924a3cdf2102df571e/services/httpd/handler.go)):
//!
//! 1. the `u` and `p` parameters, when both are non-empty (the header is then not read);
//! 2. `Authorization: Token <user>:<password>` (InfluxDB 1.8's v2-compatible form);
//! 3. `Authorization: Basic base64(<user>:<password>)`;
//!
//! and one form of fluxgate's own: `Authorization: Token <secret>`, where
//! `<secret>` is a user's API token (it must not contain `:`, or it is read as
//! form 2). `Authorization: Bearer <JWT>` (InfluxDB's shared-secret JWTs) is
//! refused with [`AuthError::BearerUnsupported`].
//!
//! Every refusal is a 401 with InfluxDB's `{"error":"..."}` text
//! ([`AuthError::message`]) and `WWW-Authenticate: Basic realm="InfluxDB"`
//! ([`WWW_AUTHENTICATE`]), as InfluxDB's `httpError` sends; a non-admin running
//! an admin statement is a 403 with [`AdminRequired`]'s text.
//!
//! # Secrets at rest
//!
//! `password_hash` and `token_hash` hold `pbkdf2-sha256$<iterations>$<salt>$<hash>`
//! (salt and hash in unpadded standard base64), as printed by [`hash_secret`]:
//! PBKDF2-HMAC-SHA256 with a random 16-byte salt per secret and
//! [`DEFAULT_ITERATIONS`] rounds. The plain secrets are never stored, and no
//! `Debug` output in this module prints a secret or a hash.
//!
//! # The cache of verified credentials
//!
//! One PBKDF2 verification costs tens of milliseconds by design, too much for
//! every request of a high-throughput proxy. So, as InfluxDB does for bcrypt
//! ([meta/client.go](https://github.com/influxdata/influxdb/blob/c1e11e732e145fc1a356535ddf3dcb9fb732a22b/services/meta/client.go#L390-L406)),
//! credentials that passed a full verification are remembered: by a SHA-256
//! digest of (a random key of this [`Users`], the user, the secret), at most
//! [`MAX_CACHED_CREDENTIALS`] of them, forgotten all at once when full. A
//! later request with the same credentials costs one SHA-256 and a read lock.
//! Failures are never cached: every wrong attempt pays a full verification
//! (unknown users too, against a dummy hash, so timing does not tell which
//! user names exist). A new config generation builds a new [`Users`], with an
//! empty cache and a new key.
//!
//! A cache lookup compares digests with ordinary `==` inside a `HashMap`: the
//! digests are keyed with a secret random key, so how long a lookup takes
//! says nothing an attacker can use. Hashes are compared in constant time.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD_NO_PAD};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Longest `Authorization` value, user name, password or token accepted,
/// checked before anything is decoded. Real credentials are far shorter; the
/// limit bounds what one request can make us hash.
pub const MAX_CREDENTIAL_BYTES: usize = 4 << 10; // 4 KiB

/// PBKDF2-HMAC-SHA256 rounds of new hashes: OWASP's recommendation (Password
/// Storage Cheat Sheet, 2023). Each hash records its own count, so this can be
/// raised later without invalidating configs.
pub const DEFAULT_ITERATIONS: u32 = 600_000;
/// Fewest rounds accepted in a configured hash: RFC 8018 §4.2 recommends at least 1,000.
pub const MIN_ITERATIONS: u32 = 1_000;
/// Most rounds accepted in a configured hash. A verification blocks its worker
/// thread; past this it would take seconds, and every wrong attempt pays it.
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// Verified credentials remembered per [`Users`]; the cache is cleared when full.
pub const MAX_CACHED_CREDENTIALS: usize = 1024;

/// `WWW-Authenticate` of every 401, as InfluxDB sends it with its default realm
/// (`httpError` in handler.go; `DefaultRealm = "InfluxDB"` in httpd/config.go).
pub const WWW_AUTHENTICATE: &str = "Basic realm=\"InfluxDB\"";

const HASH_SCHEME: &str = "pbkdf2-sha256";
/// Salt of new hashes: 128 bits, as NIST SP 800-132 recommends.
const SALT_BYTES: usize = 16;
/// Shortest salt accepted: RFC 8018 §4.1 asks for at least 64 bits.
const MIN_SALT_BYTES: usize = 8;
const MAX_SALT_BYTES: usize = 64;
/// PBKDF2 output length: one SHA-256 block, the most PBKDF2 gives without extra work.
const HASH_BYTES: usize = 32;

/// Base64 of Basic credentials as Go's `base64.StdEncoding` (what InfluxDB
/// uses) reads it: padding required, non-zero trailing bits tolerated.
const BASIC_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// One `[[users]]` entry of the config file.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Hash of the user's password, from `fluxgate hash-password`.
    pub password_hash: Option<String>,
    /// Hash of the user's API token (`Authorization: Token <token>`).
    pub token_hash: Option<String>,
    /// May run admin statements (DROP, GRANT, CREATE USER, ...).
    #[serde(default)]
    pub admin: bool,
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| Redacted),
            )
            .field("token_hash", &self.token_hash.as_ref().map(|_| Redacted))
            .field("admin", &self.admin)
            .finish()
    }
}

/// A `[[users]]` entry that cannot be used, with the key an operator must fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidUser {
    /// Such as `users[1].password_hash`.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for InvalidUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid config key `{}`: {}", self.key, self.reason)
    }
}

impl std::error::Error for InvalidUser {}

/// Credentials as a request presents them, before they are checked.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// Neither `u`/`p` nor an `Authorization` header.
    Missing,
    /// `u`/`p`, Basic, or `Token user:password`.
    Password {
        user: Cow<'a, str>,
        password: Cow<'a, str>,
    },
    /// `Token <secret>`: an API token.
    Token(&'a str),
}

impl fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Missing => f.write_str("Missing"),
            Credentials::Password { user, .. } => f
                .debug_struct("Password")
                .field("user", user)
                .field("password", &Redacted)
                .finish(),
            Credentials::Token(_) => f.debug_tuple("Token").field(&Redacted).finish(),
        }
    }
}

/// [`Credentials`] owning their text, to hand to a thread that runs the
/// slow verification off a worker.
#[derive(Clone, PartialEq, Eq)]
pub enum OwnedCredentials {
    Missing,
    Password { user: String, password: String },
    Token(String),
}

impl OwnedCredentials {
    pub fn as_credentials(&self) -> Credentials<'_> {
        match self {
            OwnedCredentials::Missing => Credentials::Missing,
            OwnedCredentials::Password { user, password } => Credentials::Password {
                user: Cow::Borrowed(user),
                password: Cow::Borrowed(password),
            },
            OwnedCredentials::Token(token) => Credentials::Token(token),
        }
    }
}

impl Credentials<'_> {
    pub fn to_owned_credentials(&self) -> OwnedCredentials {
        match self {
            Credentials::Missing => OwnedCredentials::Missing,
            Credentials::Password { user, password } => OwnedCredentials::Password {
                user: user.to_string(),
                password: password.to_string(),
            },
            Credentials::Token(token) => OwnedCredentials::Token((*token).to_owned()),
        }
    }
}

impl fmt::Debug for OwnedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_credentials().fmt(f)
    }
}

/// Why a request was not authenticated. Every kind is a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No credentials in any form.
    Missing,
    /// Credentials that cannot be read; the reason is for logs (`{:?}`),
    /// the client gets InfluxDB's text.
    Malformed(&'static str),
    /// `Authorization: Bearer <JWT>`: InfluxDB's shared-secret JWTs are not supported.
    BearerUnsupported,
    /// A user name that is empty (`Basic base64(":pw")`, `Token :pw`).
    UsernameRequired,
    /// An unknown user, a wrong password or an unknown token.
    Failed,
}

impl AuthError {
    /// The `error` text of the 401 body: InfluxDB's own, except for Bearer.
    pub fn message(&self) -> &'static str {
        match self {
            AuthError::Missing | AuthError::Malformed(_) => {
                "unable to parse authentication credentials"
            }
            AuthError::BearerUnsupported => {
                "bearer (JWT) authentication is not supported by fluxgate: \
                 use u/p parameters, Basic, or Token <user>:<password>"
            }
            AuthError::UsernameRequired => "username required",
            AuthError::Failed => "authorization failed",
        }
    }
}

impl fmt::Display for AuthError {
    /// Exactly [`AuthError::message`], so it can be the response body.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for AuthError {}

/// Who sent a request. Cheap to clone (the name is shared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: Arc<str>,
    pub admin: bool,
}

impl Identity {
    /// Refuses `statement` unless this user is an admin.
    ///
    /// # Errors
    /// [`AdminRequired`], whose text is InfluxDB's 403 body for the same case.
    pub fn require_admin(&self, statement: &str) -> Result<(), AdminRequired> {
        if self.admin {
            Ok(())
        } else {
            Err(AdminRequired {
                user: Arc::clone(&self.name),
                statement: statement.to_owned(),
            })
        }
    }
}

/// A non-admin user sent an admin statement: HTTP 403.
///
/// The text is InfluxDB's (`serveQuery` prefixes "error authorizing query: " to
/// `ErrAuthorize`, [query_authorizer.go](https://github.com/influxdata/influxdb/blob/16c7c2eed15ecf44cd5fc90c52afa8e495e176d3/services/meta/query_authorizer.go)).
/// InfluxDB prints the statement as its parser formats it; we print what we are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminRequired {
    pub user: Arc<str>,
    pub statement: String,
}

impl fmt::Display for AdminRequired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "error authorizing query: {} not authorized to execute statement '{}', requires admin privilege",
            self.user, self.statement
        )
    }
}

impl std::error::Error for AdminRequired {}

/// Reads a request's credentials in InfluxDB's order: `u` and `p` when both are
/// non-empty, else the `Authorization` header, else [`Credentials::Missing`].
///
/// `user` and `password` are the percent-decoded `u`/`p` parameters. A header
/// value that is not UTF-8 cannot hold valid credentials: pass it as
/// `Some("\u{fffd}")` or map it to [`AuthError::Malformed`] yourself.
///
/// # Errors
/// [`AuthError::Malformed`] for an unreadable header (over
/// [`MAX_CREDENTIAL_BYTES`], bad base64, no `:`, not UTF-8, unknown scheme),
/// [`AuthError::BearerUnsupported`], [`AuthError::UsernameRequired`].
pub fn credentials<'a>(
    authorization: Option<&'a str>,
    user: Option<&'a str>,
    password: Option<&'a str>,
) -> Result<Credentials<'a>, AuthError> {
    if let (Some(user), Some(password)) = (user, password) {
        if !user.is_empty() && !password.is_empty() {
            return Ok(Credentials::Password {
                user: Cow::Borrowed(user),
                password: Cow::Borrowed(password),
            });
        }
    }
    // Go's Header.Get trims surrounding whitespace; an empty header counts as absent.
    match authorization.map(|value| value.trim_matches([' ', '\t'])) {
        None | Some("") => Ok(Credentials::Missing),
        Some(value) => parse_authorization(value),
    }
}

fn parse_authorization(value: &str) -> Result<Credentials<'_>, AuthError> {
    if value.len() > MAX_CREDENTIAL_BYTES {
        return Err(AuthError::Malformed(
            "Authorization header longer than 4 KiB",
        ));
    }
    let Some((scheme, rest)) = value.split_once(' ') else {
        return Err(AuthError::Malformed(
            "Authorization header without credentials after the scheme",
        ));
    };
    let rest = rest.trim_start_matches(' ');
    // RFC 7235 makes schemes case-insensitive; InfluxDB is stricter for
    // Token and Bearer, which only means we accept a little more.
    if scheme.eq_ignore_ascii_case("Basic") {
        parse_basic(rest)
    } else if scheme.eq_ignore_ascii_case("Token") {
        parse_token(rest)
    } else if scheme.eq_ignore_ascii_case("Bearer") {
        Err(AuthError::BearerUnsupported)
    } else {
        Err(AuthError::Malformed(
            "unknown Authorization scheme: expected Basic or Token",
        ))
    }
}

fn parse_basic(encoded: &str) -> Result<Credentials<'static>, AuthError> {
    let decoded = BASIC_BASE64
        .decode(encoded)
        .map_err(|_| AuthError::Malformed("Basic credentials are not valid base64"))?;
    let mut user = String::from_utf8(decoded)
        .map_err(|_| AuthError::Malformed("Basic credentials are not UTF-8"))?;
    let Some(colon) = user.find(':') else {
        return Err(AuthError::Malformed(
            "Basic credentials without ':' between user and password",
        ));
    };
    if colon == 0 {
        return Err(AuthError::UsernameRequired);
    }
    let password = user[colon + 1..].to_owned();
    user.truncate(colon);
    Ok(Credentials::Password {
        user: Cow::Owned(user),
        password: Cow::Owned(password),
    })
}

fn parse_token(token: &str) -> Result<Credentials<'_>, AuthError> {
    if token.is_empty() {
        return Err(AuthError::Malformed("empty Token credentials"));
    }
    // InfluxDB splits the header on every space and wants exactly two parts.
    if token.contains([' ', '\t']) {
        return Err(AuthError::Malformed("Token credentials contain a space"));
    }
    match token.split_once(':') {
        Some(("", _)) => Err(AuthError::UsernameRequired),
        Some((user, password)) => Ok(Credentials::Password {
            user: Cow::Borrowed(user),
            password: Cow::Borrowed(password),
        }),
        None => Ok(Credentials::Token(token)),
    }
}

/// `Basic base64(user:password)`, for talking to a backend as `user`.
pub fn basic_authorization(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Hashes a password or token for `password_hash` / `token_hash`, with a new
/// random salt and [`DEFAULT_ITERATIONS`] rounds (this is slow on purpose).
///
/// # Errors
/// When the operating system's random number generator cannot be read.
pub fn hash_secret(secret: &str) -> io::Result<String> {
    hash_secret_with_iterations(secret, DEFAULT_ITERATIONS)
}

/// [`hash_secret`] with a chosen number of rounds (tests use [`MIN_ITERATIONS`]
/// to stay fast; high-entropy tokens may use fewer rounds than passwords).
///
/// # Errors
/// `InvalidInput` when `iterations` is outside
/// [`MIN_ITERATIONS`]`..=`[`MAX_ITERATIONS`]; the random number generator's error.
pub fn hash_secret_with_iterations(secret: &str, iterations: u32) -> io::Result<String> {
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("iterations must be {MIN_ITERATIONS} to {MAX_ITERATIONS}, not {iterations}"),
        ));
    }
    let salt: [u8; SALT_BYTES] = random_bytes()?;
    let hash = SecretHash {
        iterations,
        salt: salt.to_vec(),
        hash: pbkdf2_sha256(secret.as_bytes(), &salt, iterations),
    };
    Ok(hash.to_string())
}

fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes).map_err(io::Error::other)?;
    Ok(bytes)
}

fn pbkdf2_sha256(secret: &[u8], salt: &[u8], iterations: u32) -> [u8; HASH_BYTES] {
    let mut hash = [0; HASH_BYTES];
    pbkdf2::pbkdf2_hmac::<Sha256>(secret, salt, iterations, &mut hash);
    hash
}

/// A parsed `pbkdf2-sha256$<iterations>$<salt>$<hash>`.
#[derive(Clone)]
struct SecretHash {
    /// Always within `MIN_ITERATIONS..=MAX_ITERATIONS`.
    iterations: u32,
    /// `MIN_SALT_BYTES..=MAX_SALT_BYTES` bytes.
    salt: Vec<u8>,
    hash: [u8; HASH_BYTES],
}

impl SecretHash {
    fn parse(text: &str) -> Result<SecretHash, String> {
        const EXPECTED: &str = "expected `pbkdf2-sha256$<iterations>$<salt>$<hash>` as printed by \
                                `fluxgate hash-password` (store the hash, not the secret)";
        let mut parts = text.split('$');
        let (Some(HASH_SCHEME), Some(iterations), Some(salt), Some(hash), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(format!("not a fluxgate hash: {EXPECTED}"));
        };
        let iterations = Some(iterations)
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u32>().ok())
            .filter(|n| (MIN_ITERATIONS..=MAX_ITERATIONS).contains(n))
            .ok_or_else(|| {
                format!("iterations must be a number from {MIN_ITERATIONS} to {MAX_ITERATIONS}")
            })?;
        let salt = STANDARD_NO_PAD
            .decode(salt)
            .map_err(|_| format!("salt is not unpadded base64: {EXPECTED}"))?;
        if !(MIN_SALT_BYTES..=MAX_SALT_BYTES).contains(&salt.len()) {
            return Err(format!(
                "salt of {} bytes: expected {MIN_SALT_BYTES} to {MAX_SALT_BYTES}",
                salt.len()
            ));
        }
        let hash = STANDARD_NO_PAD
            .decode(hash)
            .ok()
            .and_then(|bytes| <[u8; HASH_BYTES]>::try_from(bytes).ok())
            .ok_or_else(|| {
                format!("hash is not {HASH_BYTES} bytes of unpadded base64: {EXPECTED}")
            })?;
        Ok(SecretHash {
            iterations,
            salt,
            hash,
        })
    }

    /// The slow part: runs all the rounds, then compares in constant time.
    fn verify(&self, secret: &str) -> bool {
        let computed = pbkdf2_sha256(secret.as_bytes(), &self.salt, self.iterations);
        computed.ct_eq(&self.hash).into()
    }
}

impl fmt::Display for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{HASH_SCHEME}${}${}${}",
            self.iterations,
            STANDARD_NO_PAD.encode(&self.salt),
            STANDARD_NO_PAD.encode(self.hash)
        )
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretHash")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// Stands in for a secret in `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug)]
struct User {
    name: Arc<str>,
    admin: bool,
    password: Option<SecretHash>,
    /// A token hashed with PBKDF2 (checked slowly, user by user); tokens
    /// hashed with SHA-256 are in `Users::fast_tokens` instead.
    token: Option<SecretHash>,
}

/// Prefix of a token hash that is a plain SHA-256 (`sha256$<64 hex digits>`),
/// from `fluxgate hash-password --token`. Fine for a random token of 128 bits
/// or more (nobody can search that space), and looked up in O(1) on the
/// worker, so wrong tokens cost a guesser nothing but one digest.
pub const FAST_TOKEN_PREFIX: &str = "sha256$";

/// The `token_hash` for a random API token: `sha256$<hex>`.
pub fn hash_token(token: &str) -> String {
    use std::fmt::Write as _;
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::from(FAST_TOKEN_PREFIX);
    for byte in digest {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn parse_fast_token(text: &str) -> Result<[u8; 32], String> {
    let hex = &text[FAST_TOKEN_PREFIX.len()..];
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(
            "a sha256$ token hash needs 64 hex digits (see `fluxgate hash-password --token`)"
                .into(),
        );
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(digest)
}

/// A keyed digest of verified credentials.
type CacheKey = [u8; 32];

/// Credentials that passed a full verification.
#[derive(Debug, Default)]
struct VerifiedCache {
    /// Digest -> index into `Users::users`. At most `MAX_CACHED_CREDENTIALS` entries.
    entries: HashMap<CacheKey, usize>,
}

impl VerifiedCache {
    fn get(&self, key: &CacheKey) -> Option<usize> {
        self.entries.get(key).copied()
    }

    fn insert(&mut self, key: CacheKey, index: usize) {
        // Clearing everything is crude but bounded and needs no bookkeeping;
        // the cost is one slow verification per active credential afterwards.
        if self.entries.len() >= MAX_CACHED_CREDENTIALS && !self.entries.contains_key(&key) {
            self.entries.clear();
        }
        self.entries.insert(key, index);
    }
}

/// The configured users of one config generation. Built once, then shared
/// read-only (`Arc<Users>`) by every worker; only the cache inside changes.
pub struct Users {
    /// In config order; `by_name` and the cache hold indexes into it.
    users: Vec<User>,
    by_name: HashMap<Arc<str>, usize>,
    /// SHA-256 of each fast token -> its user.
    fast_tokens: HashMap<[u8; 32], usize>,
    /// Whether any user has a PBKDF2 token hash (a token not found among the
    /// fast ones must then be verified slowly).
    slow_tokens: bool,
    /// Random per `Users`: cache digests cannot be computed or compared from outside.
    cache_key: [u8; 32],
    cache: RwLock<VerifiedCache>,
    /// Verified against when the user is unknown or has no password, so that a
    /// wrong user name costs as much as a wrong password. `None` when no user
    /// has a password (there is nothing to hide).
    dummy: Option<SecretHash>,
    slow_verifications: AtomicU64,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self
            .cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len();
        f.debug_struct("Users")
            .field("users", &self.users)
            .field("cached", &cached)
            .field("slow_verifications", &self.slow_verifications())
            .finish_non_exhaustive()
    }
}

/// What [`Users::authenticate`] checks: credentials past the cheap checks.
#[derive(Clone, Copy)]
enum Claim<'c> {
    Password { user: &'c str, password: &'c str },
    Token(&'c str),
}

impl<'c> Claim<'c> {
    fn from_credentials(credentials: &'c Credentials<'_>) -> Result<Claim<'c>, AuthError> {
        let too_long = AuthError::Malformed("credentials longer than 4 KiB");
        match credentials {
            Credentials::Missing => Err(AuthError::Missing),
            Credentials::Password { user, password } => {
                if user.is_empty() {
                    Err(AuthError::UsernameRequired)
                } else if user.len() > MAX_CREDENTIAL_BYTES || password.len() > MAX_CREDENTIAL_BYTES
                {
                    Err(too_long)
                } else {
                    Ok(Claim::Password { user, password })
                }
            }
            Credentials::Token("") => Err(AuthError::Malformed("empty Token credentials")),
            Credentials::Token(token) if token.len() > MAX_CREDENTIAL_BYTES => Err(too_long),
            Credentials::Token(token) => Ok(Claim::Token(token)),
        }
    }
}

impl Users {
    /// Checks and parses the `[[users]]` entries. Parsing is cheap: no hash is computed.
    ///
    /// # Errors
    /// [`InvalidUser`] naming the first bad key: an empty name or one with `:`,
    /// a duplicate name, a user with neither hash, a malformed hash; or, with key
    /// `users`, an operating system that gives no random bytes.
    pub fn new(configs: &[UserConfig]) -> Result<Users, InvalidUser> {
        let invalid = |key: String, reason: String| InvalidUser { key, reason };
        let mut users = Vec::with_capacity(configs.len());
        let mut by_name = HashMap::with_capacity(configs.len());
        let mut fast_tokens = HashMap::new();
        for (i, config) in configs.iter().enumerate() {
            let key = format!("users[{i}]");
            if config.name.is_empty() {
                return Err(invalid(format!("{key}.name"), "must not be empty".into()));
            }
            if config.name.contains(':') {
                return Err(invalid(
                    format!("{key}.name"),
                    format!(
                        "{:?} contains ':', which Basic and Token credentials use to end the user name",
                        config.name
                    ),
                ));
            }
            if config.name.len() > MAX_CREDENTIAL_BYTES {
                return Err(invalid(format!("{key}.name"), "longer than 4 KiB".into()));
            }
            if let Some(&first) = by_name.get(config.name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!(
                        "duplicate user name {:?} (also users[{first}])",
                        config.name
                    ),
                ));
            }
            if config.password_hash.is_none() && config.token_hash.is_none() {
                return Err(invalid(
                    key,
                    "needs password_hash or token_hash (make one with `fluxgate hash-password`)"
                        .into(),
                ));
            }
            let parse = |field: &str, text: &Option<String>| {
                text.as_deref()
                    .map(SecretHash::parse)
                    .transpose()
                    .map_err(|reason| invalid(format!("{key}.{field}"), reason))
            };
            let password = parse("password_hash", &config.password_hash)?;
            let token = match config.token_hash.as_deref() {
                Some(text) if text.starts_with(FAST_TOKEN_PREFIX) => {
                    let digest = parse_fast_token(text)
                        .map_err(|reason| invalid(format!("{key}.token_hash"), reason))?;
                    if let Some(other) = fast_tokens.insert(digest, i) {
                        return Err(invalid(
                            format!("{key}.token_hash"),
                            format!("the same token as users[{other}]"),
                        ));
                    }
                    None
                }
                _ => parse("token_hash", &config.token_hash)?,
            };
            let name: Arc<str> = Arc::from(config.name.as_str());
            by_name.insert(Arc::clone(&name), i);
            users.push(User {
                name,
                admin: config.admin,
                password,
                token,
            });
        }
        let dummy = users
            .iter()
            .filter_map(|user| user.password.as_ref().map(|hash| hash.iterations))
            .max()
            .map(|iterations| SecretHash {
                // The slowest configured password: an unknown user is never the fast case.
                iterations,
                salt: vec![0; SALT_BYTES],
                hash: [0; HASH_BYTES],
            });
        let cache_key = random_bytes().map_err(|e| {
            invalid(
                "users".into(),
                format!("cannot get random bytes from the operating system: {e}"),
            )
        })?;
        Ok(Users {
            slow_tokens: users.iter().any(|user| user.token.is_some()),
            users,
            by_name,
            fast_tokens,
            cache_key,
            cache: RwLock::new(VerifiedCache::default()),
            dummy,
            slow_verifications: AtomicU64::new(0),
        })
    }

    /// False when the config has no users: then nothing is checked.
    pub fn is_enabled(&self) -> bool {
        !self.users.is_empty()
    }

    /// Checks credentials: from the cache when they were verified before,
    /// otherwise with a full (slow) verification, remembered when it succeeds.
    ///
    /// Call it only when [`Users::is_enabled`]: with no users everything fails.
    ///
    /// A full verification blocks the calling thread for one PBKDF2 run (about
    /// 95 ms at [`DEFAULT_ITERATIONS`] in a release build, seconds in a debug
    /// build); a cache hit costs about 0.2 µs. [`Users::try_authenticate`]
    /// answers only what needs no slow work, so that the rest can be sent to
    /// another thread instead of stalling a worker's other connections.
    ///
    /// # Errors
    /// [`AuthError::Missing`], [`AuthError::UsernameRequired`],
    /// [`AuthError::Malformed`] (over-long credentials), [`AuthError::Failed`].
    pub fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Identity, AuthError> {
        let claim = Claim::from_credentials(credentials)?;
        if let Some(outcome) = self.fast_token(claim) {
            return outcome;
        }
        let key = self.cache_key_of(claim);
        if let Some(index) = self.cached(&key) {
            return Ok(self.identity(index));
        }
        let index = match claim {
            Claim::Password { user, password } => self.verify_password(user, password),
            Claim::Token(token) => self.verify_token(token),
        }
        .ok_or(AuthError::Failed)?;
        self.cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, index);
        Ok(self.identity(index))
    }

    /// [`Users::authenticate`] without the slow path: `None` when the answer
    /// needs a full verification (credentials not seen, or wrong).
    pub fn try_authenticate(
        &self,
        credentials: &Credentials<'_>,
    ) -> Option<Result<Identity, AuthError>> {
        let claim = match Claim::from_credentials(credentials) {
            Ok(claim) => claim,
            Err(e) => return Some(Err(e)),
        };
        if let Some(outcome) = self.fast_token(claim) {
            return Some(outcome);
        }
        self.cached(&self.cache_key_of(claim))
            .map(|index| Ok(self.identity(index)))
    }

    /// A token answered from the SHA-256 table: found, or (with no PBKDF2
    /// tokens to try) refused. None: not a token, or one to verify slowly.
    fn fast_token(&self, claim: Claim<'_>) -> Option<Result<Identity, AuthError>> {
        let Claim::Token(token) = claim else {
            return None;
        };
        if self.fast_tokens.is_empty() {
            // No token to find at all: refused on the spot, like a wrong one.
            return (!self.slow_tokens).then_some(Err(AuthError::Failed));
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        match self.fast_tokens.get(&digest) {
            Some(&index) => Some(Ok(self.identity(index))),
            None if !self.slow_tokens => Some(Err(AuthError::Failed)),
            None => None,
        }
    }

    /// Full PBKDF2 verifications so far (successful, failed and dummy): a
    /// counter for `/metrics`; a fast rise means someone is guessing.
    pub fn slow_verifications(&self) -> u64 {
        self.slow_verifications.load(Ordering::Relaxed)
    }

    fn identity(&self, index: usize) -> Identity {
        let user = &self.users[index];
        Identity {
            name: Arc::clone(&user.name),
            admin: user.admin,
        }
    }

    fn cache_key_of(&self, claim: Claim<'_>) -> CacheKey {
        let (kind, user, secret) = match claim {
            Claim::Password { user, password } => (b'p', user, password),
            Claim::Token(token) => (b't', "", token),
        };
        let mut digest = Sha256::new();
        digest.update(self.cache_key);
        digest.update([kind]);
        // The length keeps ("ab", "c") and ("a", "bc") apart.
        digest.update((user.len() as u64).to_le_bytes());
        digest.update(user.as_bytes());
        digest.update(secret.as_bytes());
        digest.finalize().into()
    }

    fn cached(&self, key: &CacheKey) -> Option<usize> {
        self.cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
    }

    fn slow_verify(&self, hash: &SecretHash, secret: &str) -> bool {
        self.slow_verifications.fetch_add(1, Ordering::Relaxed);
        hash.verify(secret)
    }

    fn verify_password(&self, user: &str, password: &str) -> Option<usize> {
        let found = self
            .by_name
            .get(user)
            .and_then(|&index| Some(index).zip(self.users[index].password.as_ref()));
        match found {
            Some((index, hash)) => self.slow_verify(hash, password).then_some(index),
            None => {
                if let Some(dummy) = &self.dummy {
                    self.slow_verify(dummy, password);
                }
                None
            }
        }
    }

    /// Tries the token against every user's token hash, in config order: with
    /// per-user salts there is no index. Tokens are high-entropy, so once
    /// verified they live in the cache like passwords.
    fn verify_token(&self, token: &str) -> Option<usize> {
        self.users.iter().position(|user| {
            user.token
                .as_ref()
                .is_some_and(|hash| self.slow_verify(hash, token))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    /// Tests hash with the fewest rounds allowed: a debug build is slow.
    const ROUNDS: u32 = MIN_ITERATIONS;

    fn hashed(secret: &str) -> String {
        hash_secret_with_iterations(secret, ROUNDS).unwrap()
    }

    fn user(name: &str, password: Option<&str>, token: Option<&str>, admin: bool) -> UserConfig {
        UserConfig {
            name: name.into(),
            password_hash: password.map(hashed),
            token_hash: token.map(hashed),
            admin,
        }
    }

    /// alice: password "s3cret", admin; bob: password "hunter2" and token
    /// "tok-bob-0123456789"; carol: token "tok-carol-abcdef" only.
    fn team() -> Users {
        Users::new(&[
            user("alice", Some("s3cret"), None, true),
            user("bob", Some("hunter2"), Some("tok-bob-0123456789"), false),
            user("carol", None, Some("tok-carol-abcdef"), false),
        ])
        .unwrap()
    }

    fn basic(user_pass: &[u8]) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    fn password(user: &str, password: &str) -> Credentials<'static> {
        Credentials::Password {
            user: Cow::Owned(user.into()),
            password: Cow::Owned(password.into()),
        }
    }

    #[track_caller]
    fn parses(
        authorization: Option<&str>,
        u: Option<&str>,
        p: Option<&str>,
        expected: Credentials<'_>,
    ) {
        assert_eq!(credentials(authorization, u, p), Ok(expected));
    }

    #[track_caller]
    fn refused(authorization: Option<&str>, u: Option<&str>, p: Option<&str>, expected: AuthError) {
        let got = credentials(authorization, u, p);
        assert_eq!(
            got,
            Err(expected),
            "credentials({authorization:?}, {u:?}, {p:?})"
        );
    }

    #[track_caller]
    fn malformed(authorization: &str) {
        match credentials(Some(authorization), None, None) {
            Err(AuthError::Malformed(_)) => {}
            other => panic!("{authorization:?} gave {other:?}, expected Malformed"),
        }
    }

    #[test]
    fn credentials_are_read_in_every_influxdb_form() {
        // u/p parameters
        parses(
            None,
            Some("bob"),
            Some("hunter2"),
            password("bob", "hunter2"),
        );
        // Basic, scheme in any case, password keeps its own colons
        parses(
            Some(&basic(b"bob:hunter2")),
            None,
            None,
            password("bob", "hunter2"),
        );
        parses(
            Some(&basic(b"bob:a:b:c"))
                .map(|h| h.replace("Basic", "bAsIc"))
                .as_deref(),
            None,
            None,
            password("bob", "a:b:c"),
        );
        parses(
            Some(&basic("jürgen:pässwörd".as_bytes())),
            None,
            None,
            password("jürgen", "pässwörd"),
        );
        parses(
            Some(&format!("  {}\t", basic(b"bob:x"))),
            None,
            None,
            password("bob", "x"),
        );
        // Basic with an empty password is readable (and then fails to verify)
        parses(Some(&basic(b"bob:")), None, None, password("bob", ""));
        // Token user:password (InfluxDB 1.8 v2-compat)
        parses(
            Some("Token bob:hunter2"),
            None,
            None,
            password("bob", "hunter2"),
        );
        parses(Some("Token bob:a:b"), None, None, password("bob", "a:b"));
        // Token <secret> (fluxgate's API tokens)
        parses(
            Some("Token tok-bob-0123456789"),
            None,
            None,
            Credentials::Token("tok-bob-0123456789"),
        );
        parses(Some("token   tok"), None, None, Credentials::Token("tok"));
    }

    #[test]
    fn nothing_usable_is_missing() {
        parses(None, None, None, Credentials::Missing);
        parses(Some(""), None, None, Credentials::Missing);
        parses(Some("  "), None, None, Credentials::Missing);
        // InfluxDB uses u/p only when both are non-empty
        parses(None, Some("bob"), None, Credentials::Missing);
        parses(None, None, Some("hunter2"), Credentials::Missing);
        parses(None, Some("bob"), Some(""), Credentials::Missing);
        parses(None, Some(""), Some("hunter2"), Credentials::Missing);
    }

    #[test]
    fn unreadable_headers_are_malformed() {
        // No credentials after the scheme
        malformed("Basic");
        malformed("Token");
        malformed("Token ");
        malformed("Basic ");
        // Invalid base64: bad characters, missing padding, space inside
        malformed("Basic !!!!");
        malformed("Basic Ym9iOmh1bnRlcjI");
        malformed("Basic Ym9i Omh1bnRlcjI=");
        // No colon
        malformed(&basic(b"bobhunter2"));
        // Not UTF-8 once decoded
        malformed(&basic(b"b\xffb:hunter2"));
        // Token with a space (InfluxDB wants exactly two parts)
        malformed("Token bob:hunter 2");
        malformed("Token a b");
        // Unknown schemes
        malformed("Digest username=\"bob\"");
        malformed("garbage");
        malformed("Ym9iOmh1bnRlcjI=");
    }

    #[test]
    fn empty_user_names_are_refused_as_influxdb_does() {
        refused(
            Some(&basic(b":hunter2")),
            None,
            None,
            AuthError::UsernameRequired,
        );
        refused(
            Some("Token :hunter2"),
            None,
            None,
            AuthError::UsernameRequired,
        );
    }

    #[test]
    fn bearer_tokens_are_refused_with_their_own_message() {
        refused(
            Some("Bearer eyJhbGciOiJIUzI1NiJ9.e30.x"),
            None,
            None,
            AuthError::BearerUnsupported,
        );
        refused(Some("bearer x"), None, None, AuthError::BearerUnsupported);
    }

    #[test]
    fn authorization_headers_are_capped_at_4_kib() {
        // The limit: a header of exactly MAX_CREDENTIAL_BYTES is read
        let token = "t".repeat(MAX_CREDENTIAL_BYTES - "Token ".len());
        let header = format!("Token {token}");
        assert_eq!(header.len(), MAX_CREDENTIAL_BYTES);
        parses(Some(&header), None, None, Credentials::Token(&token));
        // limit + 1
        malformed(&format!("Token {token}t"));
        malformed(&basic(&vec![b'a'; MAX_CREDENTIAL_BYTES]));
    }

    #[test]
    fn u_and_p_win_over_the_header_as_in_influxdb() {
        let header = basic(b"alice:s3cret");
        parses(
            Some(&header),
            Some("bob"),
            Some("hunter2"),
            password("bob", "hunter2"),
        );
        parses(
            Some("Token carol:x"),
            Some("bob"),
            Some("hunter2"),
            password("bob", "hunter2"),
        );
        // A broken header is not even read when u/p are there
        parses(
            Some("Basic !!!"),
            Some("bob"),
            Some("hunter2"),
            password("bob", "hunter2"),
        );
        parses(
            Some("Bearer x"),
            Some("bob"),
            Some("hunter2"),
            password("bob", "hunter2"),
        );
        // ... but an incomplete u/p pair falls back to the header
        parses(
            Some(&header),
            Some("bob"),
            None,
            password("alice", "s3cret"),
        );
        parses(
            Some(&header),
            Some("bob"),
            Some(""),
            password("alice", "s3cret"),
        );
        refused(
            Some("Basic !!!"),
            Some("bob"),
            None,
            AuthError::Malformed("Basic credentials are not valid base64"),
        );
    }

    #[test]
    fn messages_are_influxdbs_own() {
        assert_eq!(
            AuthError::Missing.message(),
            "unable to parse authentication credentials"
        );
        assert_eq!(
            AuthError::Malformed("x").message(),
            "unable to parse authentication credentials"
        );
        assert_eq!(AuthError::UsernameRequired.message(), "username required");
        assert_eq!(AuthError::Failed.message(), "authorization failed");
        assert_eq!(AuthError::Failed.to_string(), "authorization failed");
        assert_eq!(
            AuthError::BearerUnsupported.to_string(),
            "bearer (JWT) authentication is not supported by fluxgate: use u/p parameters, Basic, or Token <user>:<password>"
        );
        assert_eq!(WWW_AUTHENTICATE, r#"Basic realm="InfluxDB""#);
    }

    #[test]
    fn only_admins_may_run_admin_statements() {
        let admin = Identity {
            name: "alice".into(),
            admin: true,
        };
        let bob = Identity {
            name: "bob".into(),
            admin: false,
        };
        assert_eq!(admin.require_admin("DROP DATABASE telegraf"), Ok(()));
        assert_eq!(
            bob.require_admin("DROP DATABASE telegraf").unwrap_err().to_string(),
            "error authorizing query: bob not authorized to execute statement 'DROP DATABASE telegraf', requires admin privilege"
        );
    }

    #[test]
    fn every_form_authenticates_its_user() {
        let users = team();
        assert!(users.is_enabled());
        let alice = Identity {
            name: "alice".into(),
            admin: true,
        };
        let bob = Identity {
            name: "bob".into(),
            admin: false,
        };
        let carol = Identity {
            name: "carol".into(),
            admin: false,
        };
        for (authorization, u, p, expected) in [
            (None, Some("alice"), Some("s3cret"), &alice),
            (Some(basic(b"alice:s3cret")), None, None, &alice),
            (Some("Token alice:s3cret".to_owned()), None, None, &alice),
            (Some(basic(b"bob:hunter2")), None, None, &bob),
            (
                Some("Token tok-bob-0123456789".to_owned()),
                None,
                None,
                &bob,
            ),
            (
                Some("Token tok-carol-abcdef".to_owned()),
                None,
                None,
                &carol,
            ),
        ] {
            let creds = credentials(authorization.as_deref(), u, p).unwrap();
            assert_eq!(
                users.authenticate(&creds).as_ref(),
                Ok(expected),
                "{creds:?}"
            );
            // Try again: now from the cache, same answer
            assert_eq!(
                users.authenticate(&creds).as_ref(),
                Ok(expected),
                "{creds:?} again"
            );
        }
    }

    #[test]
    fn wrong_credentials_fail() {
        let users = team();
        for creds in [
            // wrong password, unknown user, wrong case
            password("alice", "wrong"),
            password("mallory", "s3cret"),
            password("Alice", "s3cret"),
            password("alice", "s3cret "),
            password("alice", ""),
            // a password that belongs to another user
            password("alice", "hunter2"),
            // a token-only user has no password; a token is not a password
            password("carol", "tok-carol-abcdef"),
            password("bob", "tok-bob-0123456789"),
            // unknown tokens, and a password used as a token
            Credentials::Token("tok-bob-0123456788"),
            Credentials::Token("hunter2"),
        ] {
            assert_eq!(
                users.authenticate(&creds),
                Err(AuthError::Failed),
                "{creds:?}"
            );
        }
        assert_eq!(
            users.authenticate(&Credentials::Missing),
            Err(AuthError::Missing)
        );
        assert_eq!(
            users.authenticate(&password("", "x")),
            Err(AuthError::UsernameRequired)
        );
        assert!(matches!(
            users.authenticate(&password("alice", &"x".repeat(MAX_CREDENTIAL_BYTES + 1))),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn success_is_cached_and_failure_is_not() {
        let users = team();
        let good = password("bob", "hunter2");
        let bad = password("bob", "hunter3");
        assert_eq!(users.try_authenticate(&good), None);
        assert_eq!(users.slow_verifications(), 0);

        users.authenticate(&good).unwrap();
        assert_eq!(users.slow_verifications(), 1);
        for _ in 0..3 {
            assert_eq!(users.authenticate(&good).unwrap().name.as_ref(), "bob");
        }
        assert_eq!(users.slow_verifications(), 1, "cache hits verify nothing");
        assert_eq!(
            users
                .try_authenticate(&good)
                .unwrap()
                .unwrap()
                .name
                .as_ref(),
            "bob"
        );

        // Every wrong attempt pays a full verification, also after a success
        for attempt in 1..=3 {
            assert_eq!(users.authenticate(&bad), Err(AuthError::Failed));
            assert_eq!(users.slow_verifications(), 1 + attempt);
        }
        assert_eq!(
            users.try_authenticate(&bad),
            None,
            "failures are not cached"
        );

        // Unknown users cost a (dummy) verification too
        assert_eq!(
            users.authenticate(&password("mallory", "x")),
            Err(AuthError::Failed)
        );
        assert_eq!(users.slow_verifications(), 5);
    }

    #[test]
    fn tokens_are_cached_after_one_search() {
        let users = team();
        let carol = Credentials::Token("tok-carol-abcdef");
        users.authenticate(&carol).unwrap();
        // bob's token hash was tried first, then carol's
        assert_eq!(users.slow_verifications(), 2);
        users.authenticate(&carol).unwrap();
        assert_eq!(users.slow_verifications(), 2);
        // A wrong token is tried against every token hash, every time
        assert_eq!(
            users.authenticate(&Credentials::Token("nope")),
            Err(AuthError::Failed)
        );
        assert_eq!(
            users.authenticate(&Credentials::Token("nope")),
            Err(AuthError::Failed)
        );
        assert_eq!(users.slow_verifications(), 6);
    }

    #[test]
    fn sha256_tokens_are_answered_on_the_spot_without_a_slow_verification() {
        let fast = |name: &str, token: &str| UserConfig {
            name: name.into(),
            password_hash: None,
            token_hash: Some(hash_token(token)),
            admin: false,
        };
        let users = Users::new(&[fast("bot", "tok-bot-3f9a"), fast("ci", "tok-ci-77b1")]).unwrap();
        let bot = users
            .try_authenticate(&Credentials::Token("tok-bot-3f9a"))
            .expect("answered without the verifier")
            .unwrap();
        assert_eq!(&*bot.name, "bot");
        assert_eq!(
            users.try_authenticate(&Credentials::Token("tok-nope")),
            Some(Err(AuthError::Failed))
        );
        assert_eq!(
            users
                .authenticate(&Credentials::Token("tok-ci-77b1"))
                .map(|i| i.name),
            Ok(Arc::from("ci"))
        );
        assert_eq!(users.slow_verifications(), 0);

        // With a PBKDF2 token among them, an unknown token is still checked slowly.
        let mixed = Users::new(&[
            fast("bot", "tok-bot-3f9a"),
            user("carol", None, Some("tok-carol"), false),
        ])
        .unwrap();
        assert_eq!(
            mixed.try_authenticate(&Credentials::Token("tok-carol")),
            None
        );
        assert_eq!(
            mixed
                .authenticate(&Credentials::Token("tok-carol"))
                .map(|i| i.name),
            Ok(Arc::from("carol"))
        );

        // Malformed and duplicate fast hashes are config errors.
        let bad = UserConfig {
            token_hash: Some("sha256$abc".into()),
            ..fast("x", "")
        };
        assert_eq!(Users::new(&[bad]).unwrap_err().key, "users[0].token_hash");
        let twice = Users::new(&[fast("a", "same"), fast("b", "same")]).unwrap_err();
        assert_eq!(twice.key, "users[1].token_hash");
    }

    #[test]
    fn cached_passwords_do_not_open_other_doors() {
        let users = team();
        users.authenticate(&password("bob", "hunter2")).unwrap();
        // Same secret, other kind or other user: not a cache hit
        assert_eq!(users.try_authenticate(&Credentials::Token("hunter2")), None);
        assert_eq!(users.try_authenticate(&password("alice", "hunter2")), None);
        assert_eq!(users.try_authenticate(&password("bobh", "unter2")), None);
    }

    #[test]
    fn cache_is_cleared_when_full() {
        let mut cache = VerifiedCache::default();
        let key = |i: usize| {
            let mut key = [0; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            key
        };
        for i in 0..MAX_CACHED_CREDENTIALS {
            cache.insert(key(i), i);
        }
        // The limit: everything kept; refreshing a known entry keeps it so
        assert_eq!(cache.entries.len(), MAX_CACHED_CREDENTIALS);
        cache.insert(key(7), 7);
        assert_eq!(cache.entries.len(), MAX_CACHED_CREDENTIALS);
        assert_eq!(cache.get(&key(0)), Some(0));
        // limit + 1: cleared, then the new entry
        cache.insert(key(MAX_CACHED_CREDENTIALS), 1);
        assert_eq!(cache.entries.len(), 1);
        assert_eq!(cache.get(&key(0)), None);
        assert_eq!(cache.get(&key(MAX_CACHED_CREDENTIALS)), Some(1));
    }

    #[test]
    fn users_authenticate_from_many_threads() {
        let users = team();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..50 {
                        assert!(
                            users
                                .authenticate(&password("alice", "s3cret"))
                                .unwrap()
                                .admin
                        );
                    }
                });
            }
        });
        // At most one slow verification per thread that missed the cache
        assert!((1..=4).contains(&users.slow_verifications()));
    }

    #[test]
    fn no_users_means_disabled() {
        let users = Users::new(&[]).unwrap();
        assert!(!users.is_enabled());
        assert_eq!(
            users.authenticate(&password("alice", "s3cret")),
            Err(AuthError::Failed)
        );
        assert_eq!(users.slow_verifications(), 0);
    }

    #[test]
    fn hashes_round_trip_and_are_salted() {
        let first = hashed("hunter2");
        let second = hashed("hunter2");
        assert_ne!(first, second, "a new salt each time");
        for text in [&first, &second] {
            let hash = SecretHash::parse(text).unwrap();
            assert_eq!(&hash.to_string(), text);
            assert_eq!(hash.iterations, ROUNDS);
            assert_eq!(hash.salt.len(), SALT_BYTES);
            assert!(hash.verify("hunter2"));
            assert!(!hash.verify("hunter3"));
            assert!(!hash.verify(""));
        }
        assert!(first.starts_with("pbkdf2-sha256$1000$"), "{first}");
    }

    #[test]
    fn hashes_match_the_rfc_7914_pbkdf2_sha256_vector() {
        // RFC 7914 §11: PBKDF2-HMAC-SHA256("passwd", "salt", c = 1, dkLen = 64), first 32 bytes
        let expected: [u8; 32] = [
            0x55, 0xac, 0x04, 0x6e, 0x56, 0xe3, 0x08, 0x9f, 0xec, 0x16, 0x91, 0xc2, 0x25, 0x44,
            0xb6, 0x05, 0xf9, 0x41, 0x85, 0x21, 0x6d, 0xde, 0x04, 0x65, 0xe6, 0x8b, 0x9d, 0x57,
            0xc2, 0x0d, 0xac, 0xbc,
        ];
        assert_eq!(pbkdf2_sha256(b"passwd", b"salt", 1), expected);
    }

    #[test]
    fn hash_secret_uses_the_default_rounds_and_refuses_others() {
        // Only the count is checked here: running 600,000 rounds in a debug build is slow.
        assert!(hash_secret_with_iterations("x", MIN_ITERATIONS - 1).is_err());
        assert!(hash_secret_with_iterations("x", MAX_ITERATIONS + 1).is_err());
        assert_eq!(DEFAULT_ITERATIONS, 600_000);
    }

    #[track_caller]
    fn bad_hash(text: &str, reason_contains: &str) {
        let reason = SecretHash::parse(text).unwrap_err();
        assert!(reason.contains(reason_contains), "{text:?}: {reason}");
    }

    #[test]
    fn malformed_hashes_are_refused() {
        let good = hashed("x");
        let parts: Vec<&str> = good.split('$').collect();
        let with = |i: usize, value: &str| {
            let mut parts = parts.clone();
            parts[i] = value;
            parts.join("$")
        };
        // Not our format at all (a plain password, bcrypt, PHC string, extra part)
        bad_hash("hunter2", "not a fluxgate hash");
        bad_hash(
            "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
            "not a fluxgate hash",
        );
        bad_hash(&format!("${good}"), "not a fluxgate hash");
        bad_hash(&format!("{good}$"), "not a fluxgate hash");
        bad_hash(&with(0, "pbkdf2-sha512"), "not a fluxgate hash");
        // Iterations
        bad_hash(&with(1, "999"), "iterations");
        bad_hash(&with(1, "10000001"), "iterations");
        bad_hash(&with(1, "+1000"), "iterations");
        bad_hash(&with(1, ""), "iterations");
        bad_hash(&with(1, "99999999999999999999"), "iterations");
        // Salt
        bad_hash(&with(2, "!!!!"), "salt is not unpadded base64");
        bad_hash(
            &with(2, "AAAAAAAAAAAAAAAAAAAAAA=="),
            "salt is not unpadded base64",
        );
        bad_hash(&with(2, "AAAAAAAAAA"), "salt of 7 bytes");
        bad_hash(&with(2, &"A".repeat(88)), "salt of 66 bytes");
        // Hash
        bad_hash(&with(3, "AAAA"), "hash is not 32 bytes");
        bad_hash(&with(3, ""), "hash is not 32 bytes");
        // Limits that are accepted
        assert!(SecretHash::parse(&with(1, "1000")).is_ok());
        assert!(SecretHash::parse(&with(1, "10000000")).is_ok());
        assert!(
            SecretHash::parse(&with(2, "AAAAAAAAAAA")).is_ok(),
            "8-byte salt"
        );
    }

    #[track_caller]
    fn invalid_users(configs: &[UserConfig], key: &str, reason_contains: &str) {
        let error = Users::new(configs).unwrap_err();
        assert_eq!(error.key, key, "{error}");
        assert!(error.reason.contains(reason_contains), "{error}");
        assert!(error
            .to_string()
            .starts_with(&format!("invalid config key `{key}`: ")));
    }

    #[test]
    fn bad_user_entries_name_their_key() {
        let ok = user("alice", Some("s3cret"), None, false);
        let named = |name: &str| UserConfig {
            name: name.into(),
            ..ok.clone()
        };
        invalid_users(&[named("")], "users[0].name", "must not be empty");
        invalid_users(&[ok.clone(), named("a:b")], "users[1].name", "contains ':'");
        invalid_users(
            &[named(&"a".repeat(MAX_CREDENTIAL_BYTES + 1))],
            "users[0].name",
            "4 KiB",
        );
        invalid_users(
            &[ok.clone(), named("bob"), named("alice")],
            "users[2].name",
            "duplicate user name \"alice\" (also users[0])",
        );
        invalid_users(
            &[
                ok.clone(),
                UserConfig {
                    password_hash: None,
                    token_hash: None,
                    ..named("bob")
                },
            ],
            "users[1]",
            "needs password_hash or token_hash",
        );
        invalid_users(
            &[UserConfig {
                password_hash: Some("s3cret".into()),
                ..ok.clone()
            }],
            "users[0].password_hash",
            "not a fluxgate hash",
        );
        invalid_users(
            &[UserConfig {
                token_hash: Some("pbkdf2-sha256$1$AAAAAAAAAAA$AAAA".into()),
                ..ok.clone()
            }],
            "users[0].token_hash",
            "iterations",
        );
        // The error never repeats the configured value
        let error = Users::new(&[UserConfig {
            password_hash: Some("hunter2".into()),
            ..ok
        }])
        .unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn debug_output_never_shows_secrets_or_hashes() {
        let config = user("bob", Some("hunter2"), Some("tok-bob-0123456789"), false);
        let password_hash = config.password_hash.clone().unwrap();
        let token_hash = config.token_hash.clone().unwrap();
        let users = Users::new(std::slice::from_ref(&config)).unwrap();
        users.authenticate(&password("bob", "hunter2")).unwrap();
        let header = basic(b"bob:hunter2");
        let creds = credentials(Some(&header), None, None).unwrap();
        let token = credentials(Some("Token tok-bob-0123456789"), None, None).unwrap();
        let salt = password_hash.split('$').nth(2).unwrap().to_owned();
        for debug in [
            format!("{config:?}"),
            format!("{users:?}"),
            format!("{creds:?}"),
            format!("{token:?}"),
        ] {
            for secret in [
                "hunter2",
                "tok-bob-0123456789",
                &password_hash,
                &token_hash,
                &salt,
            ] {
                assert!(!debug.contains(secret), "{debug} shows {secret}");
            }
            assert!(
                debug.contains("<redacted>") || debug.contains("Users"),
                "{debug}"
            );
        }
        assert_eq!(
            format!("{creds:?}"),
            r#"Password { user: "bob", password: <redacted> }"#
        );
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
    }

    #[test]
    fn user_config_reads_from_toml() {
        #[derive(Deserialize)]
        struct File {
            users: Vec<UserConfig>,
        }
        let file: File = toml::from_str(
            r#"
            [[users]]
            name = "alice"
            password_hash = "pbkdf2-sha256$1000$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            admin = true
            [[users]]
            name = "bob"
            token_hash = "x"
            "#,
        )
        .unwrap();
        assert!(file.users[0].admin && file.users[0].token_hash.is_none());
        assert!(!file.users[1].admin && file.users[1].password_hash.is_none());
        assert!(toml::from_str::<File>("[[users]]\nname = \"a\"\npassword = \"x\"\n").is_err());
    }

    #[test]
    fn users_can_be_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Users>();
        send_sync::<Identity>();
    }

    /// Prints what one uncached verification costs at the default rounds:
    /// `cargo test measure_one_uncached_verification -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check; slow in debug builds"]
    fn measure_one_uncached_verification() {
        let started = std::time::Instant::now();
        let hash = hash_secret("hunter2").unwrap();
        let hashing = started.elapsed();
        let users = Users::new(&[UserConfig {
            name: "bob".into(),
            password_hash: Some(hash),
            token_hash: None,
            admin: false,
        }])
        .unwrap();
        let runs: u32 = 3;
        let started = std::time::Instant::now();
        for _ in 0..runs {
            assert_eq!(
                users.authenticate(&password("bob", "wrong")),
                Err(AuthError::Failed)
            );
        }
        let verify = started.elapsed() / runs;
        users.authenticate(&password("bob", "hunter2")).unwrap();
        let hits: u32 = 100_000;
        let started = std::time::Instant::now();
        for _ in 0..hits {
            users.authenticate(&password("bob", "hunter2")).unwrap();
        }
        let hit = started.elapsed() / hits;
        println!(
            "{DEFAULT_ITERATIONS} rounds: hash_secret {hashing:?}, uncached verify {verify:?}, cached {hit:?}"
        );
    }

    proptest! {
        #[test]
        fn credentials_never_panic(
            header in proptest::option::of(".{0,64}"),
            u in proptest::option::of(".{0,8}"),
            p in proptest::option::of(".{0,8}"),
        ) {
            let _ = credentials(header.as_deref(), u.as_deref(), p.as_deref());
        }

        #[test]
        fn any_basic_payload_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let header = basic(&payload);
            let _ = credentials(Some(&header), None, None);
        }

        #[test]
        fn basic_credentials_round_trip(user in "[^:]{1,16}", password in ".{0,16}") {
            let header = basic(format!("{user}:{password}").as_bytes());
            prop_assert_eq!(
                credentials(Some(&header), None, None),
                Ok(Credentials::Password { user: Cow::Owned(user), password: Cow::Owned(password) })
            );
        }

        #[test]
        fn headers_after_a_known_scheme_never_panic(
            scheme in "(Basic|Token|Bearer|basic|TOKEN) {0,2}",
            rest in ".{0,48}",
        ) {
            let _ = credentials(Some(&format!("{scheme}{rest}")), None, None);
        }
    }
}
