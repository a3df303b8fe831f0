//! `agora.auth.mode = "command"`: a token printed by an external program.
//!
//! The program (`agora.auth.command`, program then arguments; no shell) runs with
//! `agora.auth.command_timeout_ms` and no stdin. Its stdout's first line is the token; an optional
//! second line is its lifetime in whole seconds. The token is kept until shortly before that
//! lifetime ends ([`super::renew_after`]), or, without a lifetime, until AGORA refuses it with a
//! `401`. One renewal at a time: the cache sits behind a `tokio` mutex held across the run, so
//! callers arriving meanwhile wait and take the new token instead of running the program again.

use super::{
    renew_after, AuthError, AuthStatus, Authenticator, Cached, Credential, ExpiryCell, Placement,
};
use crate::clients::ClientBuildError;
use async_trait::async_trait;
use reqwest::header::HeaderName;
use std::fmt;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How much of a failing program's stderr goes into the error (the log has it all, redacted).
const STDERR_EXCERPT: usize = 400;

/// See the module's documentation.
pub struct CommandToken {
    program: String,
    args: Vec<String>,
    timeout: Duration,
    header: HeaderName,
    placement: Placement,
    cache: Mutex<Option<Cached>>,
    serial: AtomicU64,
    expires: ExpiryCell,
}

impl fmt::Debug for CommandToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The arguments may carry a password: the program alone.
        f.debug_struct("CommandToken")
            .field("program", &self.program)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What one run gave.
struct Issued {
    token: String,
    lifetime: Option<Duration>,
}

impl CommandToken {
    /// `argv`: the program, then its arguments.
    pub fn new(
        argv: &[String],
        timeout: Duration,
        placement: &Placement,
    ) -> Result<Self, ClientBuildError> {
        let Some((program, args)) = argv.split_first().filter(|(p, _)| !p.trim().is_empty()) else {
            return Err(ClientBuildError::Auth {
                setting: "agora.auth.command",
                problem: "is empty: give the program and its arguments, as a list".to_string(),
            });
        };
        if timeout.is_zero() {
            return Err(ClientBuildError::Auth {
                setting: "agora.auth.command_timeout_ms",
                problem: "must be more than 0".to_string(),
            });
        }
        Ok(CommandToken {
            program: program.clone(),
            args: args.to_vec(),
            timeout,
            header: placement.header_name()?,
            placement: placement.clone(),
            cache: Mutex::new(None),
            serial: AtomicU64::new(0),
            expires: ExpiryCell::default(),
        })
    }

    /// Runs the program once and reads its token.
    async fn run(&self) -> Result<Issued, AuthError> {
        let started = Instant::now();
        let child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A program past its timeout is killed when its future is dropped.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| AuthError::CommandSpawn {
                program: self.program.clone(),
                kind: e.kind(),
            })?;
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                return Err(AuthError::CommandSpawn {
                    program: self.program.clone(),
                    kind: e.kind(),
                })
            }
            Err(_) => {
                let e = AuthError::CommandTimedOut {
                    program: self.program.clone(),
                    timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
                };
                tracing::warn!(program = %self.program, error = %e, "the AGORA token command timed out");
                return Err(e);
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut lines = stdout.lines();
        let token = lines.next().unwrap_or_default().trim().to_string();
        let stderr = redact(&String::from_utf8_lossy(&output.stderr), &token);
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if !output.status.success() {
            let status = output.status.code().map_or_else(
                || "killed by a signal".to_string(),
                |c| format!("exit status {c}"),
            );
            tracing::warn!(
                program = %self.program,
                status = %status,
                duration_ms,
                stderr = %stderr.trim(),
                "the AGORA token command failed"
            );
            return Err(AuthError::CommandFailed {
                program: self.program.clone(),
                status,
                stderr: excerpt(stderr.trim()),
            });
        }
        if !stderr.trim().is_empty() {
            tracing::info!(program = %self.program, stderr = %stderr.trim(), "the AGORA token command wrote on stderr");
        }
        if token.is_empty() {
            return Err(self.output_error("printed no token on the first line of its output"));
        }
        if self.placement.value(&token).is_none() {
            return Err(self.output_error("printed a token that is not a valid HTTP header value"));
        }
        let lifetime = match lines.next().map(str::trim).filter(|l| !l.is_empty()) {
            None => None,
            Some(line) => match line.parse::<u64>() {
                Ok(s) if s > 0 => Some(Duration::from_secs(s)),
                _ => {
                    return Err(self.output_error(
                        "printed a second line that is not a lifetime in whole seconds (> 0)",
                    ))
                }
            },
        };
        tracing::info!(
            program = %self.program,
            duration_ms,
            lifetime_s = lifetime.map(|l| l.as_secs()),
            "the AGORA token command issued a token"
        );
        Ok(Issued { token, lifetime })
    }

    fn output_error(&self, problem: &'static str) -> AuthError {
        let e = AuthError::CommandOutput {
            program: self.program.clone(),
            problem,
        };
        tracing::warn!(program = %self.program, error = %e, "the AGORA token command gave no usable token");
        e
    }
}

#[async_trait]
impl Authenticator for CommandToken {
    async fn credential(&self) -> Result<Credential, AuthError> {
        let mut cache = self.cache.lock().await;
        if let Some(held) = cache.as_ref().filter(|c| c.fresh(Instant::now())) {
            return Ok(held.credential.clone());
        }
        *cache = None;
        self.expires.set(None);
        let issued = self.run().await?;
        let serial = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
        let credential = Credential {
            name: self.header.clone(),
            // Checked by `run`.
            value: self.placement.value(&issued.token).ok_or_else(|| {
                self.output_error("printed a token that is not a valid HTTP header value")
            })?,
            serial,
        };
        let now = Instant::now();
        self.expires.set(
            issued
                .lifetime
                .and_then(|l| chrono::Duration::from_std(l).ok())
                .map(|l| chrono::Utc::now() + l),
        );
        *cache = Some(Cached {
            credential: credential.clone(),
            renew_at: issued.lifetime.map(|l| now + renew_after(l)),
        });
        Ok(credential)
    }

    async fn refused(&self, used: &Credential) -> bool {
        let mut cache = self.cache.lock().await;
        if cache
            .as_ref()
            .is_some_and(|c| c.credential.serial == used.serial)
        {
            *cache = None;
            self.expires.set(None);
        }
        true
    }

    fn status(&self) -> AuthStatus {
        AuthStatus {
            mode: "command",
            expires_at: self.expires.get(),
        }
    }
}

/// `text` with every occurrence of `token` replaced (a program may echo what it printed).
pub(crate) fn redact(text: &str, token: &str) -> String {
    if token.is_empty() {
        return text.to_string();
    }
    text.replace(token, "[redacted]")
}

fn excerpt(text: &str) -> String {
    if text.chars().count() <= STDERR_EXCERPT {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(STDERR_EXCERPT).collect();
    cut.push('…');
    cut
}
