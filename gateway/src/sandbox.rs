//! The built-in simulators (`passerelle sandbox`, and `agora.base_url = "sandbox"` in `serve`),
//! present when the gateway is built with its `sandbox` feature, the default. A production build
//! (`--no-default-features`, docker/Dockerfile's default) leaves the simulators' crate out: there,
//! `agora.base_url = "sandbox"` is refused at start-up and the `sandbox` command does not exist.

use secrecy::SecretString;

#[cfg(feature = "sandbox")]
pub use passerelle_sandbox::RunningSandbox;

/// Stands for the simulators in a build without them: no value of it exists.
#[cfg(not(feature = "sandbox"))]
#[derive(Debug)]
pub enum RunningSandbox {}

#[cfg(not(feature = "sandbox"))]
impl RunningSandbox {
    pub async fn shutdown(self) {
        match self {}
    }
}

/// Whether this build carries the simulators.
pub const BUILT_IN: bool = cfg!(feature = "sandbox");

/// What a build without the simulators answers to `agora.base_url = "sandbox"`.
pub const ABSENT: &str = "this build of passerelle has no built-in sandbox (it was built without \
     its `sandbox` feature, as production images are): set agora.base_url to AGORA's address";

/// Starts the simulators in this process: them, AGORA's URL and the token they expect.
#[cfg(feature = "sandbox")]
pub async fn start_embedded() -> Result<(RunningSandbox, String, SecretString), String> {
    let sb = passerelle_sandbox::Sandbox::start(passerelle_sandbox::SandboxConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    let url = sb.agora_url();
    let token = SecretString::from(sb.agora_token().to_string());
    Ok((sb, url, token))
}

/// Refuses: this build has no simulators ([`ABSENT`]).
#[cfg(not(feature = "sandbox"))]
pub async fn start_embedded() -> Result<(RunningSandbox, String, SecretString), String> {
    Err(ABSENT.to_string())
}
