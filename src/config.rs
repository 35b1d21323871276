//! Listening profiles (`sip-profiles/*.toml`): parsing, environment overrides and
//! validation into a typed [`Profile`].
//!
//! Every error names where the bad value came from (the file or the environment
//! variable), the key, what is wrong and how to fix it. Nothing here opens sockets.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The profile compiled into the binary, used when no profile file is found, so that
/// `sofia-phone serve` works from any directory.
pub const BUILTIN_PROFILE: &str = include_str!("../sip-profiles/default.toml");
const BUILTIN_NAME: &str = "<built-in sip-profiles/default.toml>";

/// A configuration problem, reported to the operator as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file or environment variable the value came from.
    pub origin: String,
    /// The key, dotted (`sip.port`), or empty when the whole file is unreadable.
    pub key: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}; {}", self.origin, self.problem, self.fix)
        } else {
            write!(
                f,
                "{}: `{}`: {}; {}",
                self.origin, self.key, self.problem, self.fix
            )
        }
    }
}

impl std::error::Error for ConfigError {}

fn error(
    origin: &str,
    key: &str,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError {
        origin: origin.to_string(),
        key: key.to_string(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// A SIP transport the switch listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    /// SIP over TLS on `sip.tls_port` (RFC 3261 26.2, sips:).
    Tls,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        })
    }
}

/// Audio codecs the media engine can negotiate, in the names SDP uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Codec {
    #[serde(rename = "PCMU")]
    Pcmu,
    #[serde(rename = "PCMA")]
    Pcma,
    #[serde(rename = "opus")]
    Opus,
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::Opus => "opus",
        })
    }
}

/// What a dialled extension leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Application {
    /// The voice agent: speech recognition, the LLM step, speech synthesis, memory.
    Agent,
    /// Echoes the caller's audio back through the whole media path.
    Echo,
    /// A registered phone: the call is offered to every phone registered as this user
    /// (the switch is a B2BUA between the two calls). Every configured user's
    /// extension leads here; it cannot be written in the dialplan.
    #[serde(skip)]
    User,
}

impl fmt::Display for Application {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Application::Agent => "agent",
            Application::Echo => "echo",
            Application::User => "user",
        })
    }
}

/// Whisper model sizes `models fetch` can provision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum WhisperModel {
    #[serde(rename = "tiny.en")]
    TinyEn,
    #[serde(rename = "base")]
    Base,
}

impl fmt::Display for WhisperModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WhisperModel::TinyEn => "tiny.en",
            WhisperModel::Base => "base",
        })
    }
}

/// An inclusive range of UDP ports for RTP, starting on an even port (RFC 3550 11:
/// RTP on even ports, RTCP on the next odd one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// How many calls fit: each takes an even RTP port and the odd RTCP port above it.
    pub fn call_capacity(&self) -> usize {
        (usize::from(self.last) - usize::from(self.first)).div_ceil(2)
    }

    fn parse(text: &str) -> Result<PortRange, String> {
        let (first, last) = text
            .split_once('-')
            .ok_or_else(|| format!("`{text}` is not a range"))?;
        let first: u16 = first
            .trim()
            .parse()
            .map_err(|_| format!("`{}` is not a port number", first.trim()))?;
        let last: u16 = last
            .trim()
            .parse()
            .map_err(|_| format!("`{}` is not a port number", last.trim()))?;
        if first < 1024 {
            return Err(format!("first port {first} is privileged (below 1024)"));
        }
        if first % 2 != 0 {
            return Err(format!("first port {first} is odd; RTP uses even ports"));
        }
        if last <= first {
            return Err(format!("last port {last} is not above first port {first}"));
        }
        Ok(PortRange { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipSettings {
    pub listen: IpAddr,
    pub port: u16,
    pub transports: Vec<Transport>,
    /// The address put in Via, Contact and SDP when it differs from the bind address
    /// (NAT, containers). `None`: use the address the socket is bound to or the one a
    /// request arrived on.
    pub external_addr: Option<String>,
    /// `external_addr` as an IP address (resolved when the profile is loaded if it is a
    /// DNS name, IPv4 preferred): the address put in SDP `c=` lines.
    pub external_ip: Option<IpAddr>,
    pub realm: String,
    /// Live server transactions beyond which new requests get a stateless 503.
    pub max_transactions: u32,
    /// Open SIP TCP connections beyond which new ones are refused.
    pub max_tcp_connections: u32,
    /// Open SIP TCP connections from one source address beyond which its new ones are
    /// refused.
    pub max_tcp_connections_per_source: u32,
    /// A SIP TCP connection that carries nothing for this long is closed.
    pub tcp_idle_secs: u32,
    /// Where SIP over TLS listens when `transports` has "tls".
    pub tls_port: u16,
    /// The server certificate chain and private key (PEM). `None`: a self-signed pair
    /// generated into `<data_dir>/tls/` on first start.
    pub tls_certificate: Option<PathBuf>,
    pub tls_private_key: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationSettings {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub max_contacts_per_aor: usize,
    /// Send OPTIONS to every UDP contact this often, keeping NAT bindings open; 0: never.
    pub keepalive_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    pub register: bool,
    pub invite: bool,
    pub nonce_ttl_secs: u32,
    pub failures_before_block: u32,
    pub block_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpSettings {
    pub ports: PortRange,
    pub codecs: Vec<Codec>,
    /// Media encryption (SRTP with SDES keys).
    pub srtp: Srtp,
}

/// `rtp.srtp`: whether calls' media is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Srtp {
    /// Plain RTP only.
    Off,
    /// SRTP when the phone offers or accepts it.
    Optional,
    /// SRTP or 488.
    Required,
}

impl Srtp {
    pub fn policy(self) -> sofia_media::SrtpPolicy {
        match self {
            Srtp::Off => sofia_media::SrtpPolicy::Off,
            Srtp::Optional => sofia_media::SrtpPolicy::Optional,
            Srtp::Required => sofia_media::SrtpPolicy::Required,
        }
    }
}

/// Where a user's password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    /// Written in the profile or in `SOFIA_USERS`.
    Given(String),
    /// Generated on first start and kept in `<data_dir>/credentials.toml`.
    Generated,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub extension: String,
    pub password: Password,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub extension: String,
    pub application: Application,
}

/// Call handling that is not SIP or RTP protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSettings {
    /// Ring (180) this long before answering; 0 answers at once.
    pub answer_delay_ms: u32,
    /// Longest call; the switch hangs up after it.
    pub max_duration_secs: u32,
    /// No RTP from the caller for this long ends the call (not while on hold).
    pub rtp_timeout_secs: u32,
    /// On SIGTERM, calls in progress get this long to end by themselves (new calls get
    /// 503 meanwhile); then the switch hangs up on the rest and exits.
    pub drain_secs: u32,
    /// Concurrent calls the switch accepts, as configured; 0: automatic, see
    /// [`CallSettings::max_calls`]. Beyond it new INVITEs get 503 with Retry-After.
    pub max_calls: u32,
    /// Concurrent calls from one authenticated caller; beyond it 486 Busy Here.
    pub max_calls_per_user: u32,
    /// A call to a registered phone rings this long before the caller gets 408.
    pub ring_secs: u32,
}

/// The number of CPU cores the process may use (at least 1).
fn cpu_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Calls per CPU core the automatic `calls.max_calls` allows (echo and signalling are
/// cheap; the agent has its own limit).
const CALLS_PER_CORE: usize = 500;

/// Agent calls per CPU core the automatic `agent.max_calls` allows: the turn benchmark
/// measured a p95 turn latency of about 1.5 s with 4 calls on a 2-core machine.
const AGENT_CALLS_PER_CORE: usize = 2;

impl CallSettings {
    /// Concurrent calls the switch accepts: `calls.max_calls`, or when it is 0 the
    /// smaller of the RTP range's capacity and 500 per CPU core.
    pub fn max_calls(&self, rtp: &PortRange) -> usize {
        if self.max_calls > 0 {
            self.max_calls as usize
        } else {
            rtp.call_capacity().min(CALLS_PER_CORE * cpu_cores())
        }
    }
}

/// How the agent decides that the caller has finished (`agent.end_of_turn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndOfTurnMode {
    /// After `agent.end_of_turn_ms` of silence.
    Silence,
    /// The Smart Turn model judges the audio after `agent.turn_check_ms` of silence; the
    /// turn ends anyway after `agent.end_of_turn_fallback_ms`.
    Model,
}

/// The voice agent's tunables and its language model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    pub end_of_turn: EndOfTurnMode,
    /// Silence after speech that ends the caller's turn (silence mode; model mode when
    /// the model fails).
    pub end_of_turn_ms: u32,
    /// Model mode: silence after which the model is asked.
    pub turn_check_ms: u32,
    /// Model mode: silence after which the turn ends whatever the model said.
    pub end_of_turn_fallback_ms: u32,
    /// Shorter speech (a cough, a click) is not a turn.
    pub min_speech_ms: u32,
    /// Longer speech is cut and transcribed.
    pub max_utterance_secs: u32,
    /// Caller silence before the agent asks whether they are still there.
    pub silence_timeout_secs: u32,
    /// An OpenAI-compatible endpoint up to and including `/v1`; `None`: the built-in
    /// responder answers.
    pub llm_url: Option<String>,
    pub llm_model: String,
    pub llm_api_key: Option<String>,
    pub llm_timeout_secs: u32,
    /// The language model must start answering (its first words) within this, or the
    /// built-in responder answers the turn.
    pub llm_first_text_timeout_ms: u32,
    /// Consecutive failures of a stage (speech-to-text, language model, speech) that
    /// open its circuit breaker, for every call: calls then use the fallback at once.
    pub breaker_failures: u32,
    /// How long an open breaker stays open before one trial request is let through.
    pub breaker_open_secs: u32,
    /// Concurrent calls to the agent, as configured; 0: automatic, see
    /// [`AgentSettings::max_calls`]. Beyond it calls get 486 with Retry-After.
    pub max_calls: u32,
    /// Where "connect me to a person" (or the key 0) puts the caller through; `None`:
    /// only extensions asked for by number, from `handoff_allowed`.
    pub handoff_extension: Option<String>,
    /// Extensions a caller may ask the agent for by number; empty: every configured
    /// user.
    pub handoff_allowed: Vec<String>,
    /// Caller speech that is the agent's own playout coming back (a speakerphone, a
    /// PSTN hybrid) does not interrupt the agent.
    pub echo_suppression: bool,
}

impl AgentSettings {
    /// Concurrent calls the agent takes: `agent.max_calls`, or when it is 0 two per CPU
    /// core.
    pub fn max_calls(&self) -> usize {
        if self.max_calls > 0 {
            self.max_calls as usize
        } else {
            AGENT_CALLS_PER_CORE * cpu_cores()
        }
    }
}

/// What the agent remembers and for how long (`[memory]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemorySettings {
    /// Everything older than this many days is deleted; `None` keeps memories until
    /// they fade (forgetting) or `memory forget` removes them.
    pub retention_days: Option<u32>,
    /// The caller's most recent turns, never pruned by forgetting.
    pub keep_recent_turns: u32,
    /// How long a reply waits for recall by meaning before it goes without.
    pub recall_budget_ms: u32,
}

/// A validated profile with every override applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The file the profile came from, or the built-in name.
    pub origin: String,
    pub sip: SipSettings,
    pub registration: RegistrationSettings,
    pub auth: AuthSettings,
    pub rtp: RtpSettings,
    pub calls: CallSettings,
    pub http_listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Where the model files are: a cache shared by every data dir (see
    /// [`default_models_dir`]), or `SOFIA_MODELS_DIR` / `storage.models_dir`.
    pub models_dir: PathBuf,
    /// Set when `models_dir` is an older install's location, kept so that its models
    /// are not fetched again; said in the log at start.
    pub models_note: Option<String>,
    pub whisper_model: WhisperModel,
    pub agent: AgentSettings,
    pub memory: MemorySettings,
    pub users: Vec<User>,
    pub dialplan: Vec<Route>,
}

impl Profile {
    /// Concurrent calls the switch accepts (`calls.max_calls` resolved against the RTP
    /// range).
    pub fn max_calls(&self) -> usize {
        self.calls.max_calls(&self.rtp.ports)
    }

    /// The application an extension is routed to: the dialplan's, else a configured
    /// user's phones.
    pub fn route(&self, extension: &str) -> Option<Application> {
        self.dialplan
            .iter()
            .find(|r| r.extension == extension)
            .map(|r| r.application)
            .or_else(|| {
                self.users
                    .iter()
                    .any(|u| u.extension == extension)
                    .then_some(Application::User)
            })
    }
}

// ---- the file format -------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    sip: SipFile,
    #[serde(default)]
    registration: RegistrationFile,
    #[serde(default)]
    auth: AuthFile,
    rtp: RtpFile,
    #[serde(default)]
    calls: CallsFile,
    #[serde(default)]
    http: HttpFile,
    #[serde(default)]
    storage: StorageFile,
    #[serde(default)]
    stt: SttFile,
    #[serde(default)]
    agent: AgentFile,
    #[serde(default)]
    memory: MemoryFile,
    #[serde(default)]
    users: BTreeMap<String, UserFile>,
    #[serde(default)]
    dialplan: BTreeMap<String, Application>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SipFile {
    #[serde(default = "default_listen")]
    listen: IpAddr,
    #[serde(default = "default_sip_port")]
    port: u16,
    #[serde(default = "default_transports")]
    transports: Vec<Transport>,
    #[serde(default)]
    external_addr: String,
    #[serde(default = "default_realm")]
    realm: String,
    #[serde(default = "default_max_transactions")]
    max_transactions: u32,
    #[serde(default = "default_max_tcp_connections")]
    max_tcp_connections: u32,
    #[serde(default = "default_max_tcp_connections_per_source")]
    max_tcp_connections_per_source: u32,
    #[serde(default = "default_tcp_idle_secs")]
    tcp_idle_secs: u32,
    #[serde(default = "default_tls_port")]
    tls_port: u16,
    #[serde(default)]
    tls_certificate: String,
    #[serde(default)]
    tls_private_key: String,
}

fn default_tls_port() -> u16 {
    5061
}

fn default_listen() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}
fn default_sip_port() -> u16 {
    5060
}
fn default_transports() -> Vec<Transport> {
    vec![Transport::Udp, Transport::Tcp]
}
fn default_realm() -> String {
    "sofia-phone".to_string()
}
fn default_max_transactions() -> u32 {
    20_000
}
fn default_max_tcp_connections() -> u32 {
    4096
}
fn default_max_tcp_connections_per_source() -> u32 {
    64
}
fn default_tcp_idle_secs() -> u32 {
    300
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RegistrationFile {
    min_expires: u32,
    max_expires: u32,
    default_expires: u32,
    max_contacts_per_aor: usize,
    keepalive_secs: u32,
}

impl Default for RegistrationFile {
    fn default() -> Self {
        RegistrationFile {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 600,
            max_contacts_per_aor: 5,
            keepalive_secs: 30,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AuthFile {
    register: bool,
    invite: bool,
    nonce_ttl_secs: u32,
    failures_before_block: u32,
    block_secs: u32,
}

impl Default for AuthFile {
    fn default() -> Self {
        AuthFile {
            register: true,
            invite: true,
            nonce_ttl_secs: 300,
            failures_before_block: 10,
            block_secs: 300,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RtpFile {
    ports: String,
    #[serde(default = "default_codecs")]
    codecs: Vec<Codec>,
    #[serde(default = "default_srtp")]
    srtp: Srtp,
}

fn default_srtp() -> Srtp {
    Srtp::Optional
}

fn default_codecs() -> Vec<Codec> {
    vec![Codec::Pcmu, Codec::Pcma, Codec::Opus]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CallsFile {
    answer_delay_ms: u32,
    max_duration_secs: u32,
    rtp_timeout_secs: u32,
    drain_secs: u32,
    max_calls: u32,
    max_calls_per_user: u32,
    ring_secs: u32,
}

impl Default for CallsFile {
    fn default() -> Self {
        CallsFile {
            ring_secs: 30,
            answer_delay_ms: 0,
            max_duration_secs: 3600,
            rtp_timeout_secs: 30,
            drain_secs: 30,
            max_calls: 0,
            max_calls_per_user: 8,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HttpFile {
    listen: String,
}

impl Default for HttpFile {
    fn default() -> Self {
        HttpFile {
            listen: "127.0.0.1:8080".to_string(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StorageFile {
    data_dir: String,
    models_dir: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SttFile {
    model: WhisperModel,
}

impl Default for SttFile {
    fn default() -> Self {
        SttFile {
            model: WhisperModel::TinyEn,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AgentFile {
    end_of_turn: String,
    end_of_turn_ms: u32,
    turn_check_ms: u32,
    end_of_turn_fallback_ms: u32,
    min_speech_ms: u32,
    max_utterance_secs: u32,
    silence_timeout_secs: u32,
    llm_url: String,
    llm_model: String,
    llm_api_key: String,
    llm_timeout_secs: u32,
    llm_first_text_timeout_ms: u32,
    breaker_failures: u32,
    breaker_open_secs: u32,
    max_calls: u32,
    handoff_extension: String,
    handoff_allowed: Vec<String>,
    echo_suppression: bool,
}

impl Default for AgentFile {
    fn default() -> Self {
        AgentFile {
            end_of_turn: "model".to_string(),
            end_of_turn_ms: 600,
            turn_check_ms: 200,
            end_of_turn_fallback_ms: 1600,
            min_speech_ms: 200,
            max_utterance_secs: 15,
            silence_timeout_secs: 10,
            llm_url: String::new(),
            llm_model: "llama3.2".to_string(),
            llm_api_key: String::new(),
            llm_timeout_secs: 30,
            llm_first_text_timeout_ms: 5000,
            breaker_failures: 3,
            breaker_open_secs: 30,
            max_calls: 0,
            handoff_extension: String::new(),
            handoff_allowed: Vec::new(),
            echo_suppression: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct MemoryFile {
    retention_days: u32,
    keep_recent_turns: u32,
    recall_budget_ms: u32,
}

impl Default for MemoryFile {
    fn default() -> Self {
        MemoryFile {
            retention_days: 0,
            keep_recent_turns: 500,
            recall_budget_ms: 150,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserFile {
    #[serde(default)]
    password: Option<String>,
}

// ---- loading ---------------------------------------------------------------------------

/// The environment, as a lookup function, so tests can supply their own.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for BTreeMap<&str, &str> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| v.to_string())
    }
}

/// Overrides given on the command line; they win over the environment and the file.
#[derive(Debug, Default, Clone)]
pub struct CliOverrides {
    pub data_dir: Option<PathBuf>,
}

/// Where the profile comes from when `--config` is not given: `SOFIA_CONFIG`, then
/// `sip-profiles/default.toml` under the current directory, then
/// `/etc/sofia-phone/default.toml`, then the built-in default.
pub fn locate_profile(explicit: Option<&Path>, env: &dyn Env) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_path_buf());
    }
    if let Some(path) = env.var("SOFIA_CONFIG") {
        return Some(PathBuf::from(path));
    }
    ["sip-profiles/default.toml", "/etc/sofia-phone/default.toml"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Reads, overrides and validates a profile. `path: None` means the built-in default.
pub fn load(
    path: Option<&Path>,
    env: &dyn Env,
    cli: &CliOverrides,
) -> Result<Profile, ConfigError> {
    let (origin, text) = match path {
        Some(path) => {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| {
                error(
                    &origin,
                    "",
                    format!("cannot read the profile: {e}"),
                    "pass an existing file with --config, or omit it to use the default profile",
                )
            })?;
            (origin, text)
        }
        None => (BUILTIN_NAME.to_string(), BUILTIN_PROFILE.to_string()),
    };
    parse(&origin, &text, env, cli)
}

/// Parses profile text; `origin` names it in errors.
pub fn parse(
    origin: &str,
    text: &str,
    env: &dyn Env,
    cli: &CliOverrides,
) -> Result<Profile, ConfigError> {
    let file = deserialize(origin, text)?;
    validate(origin, file, env, cli)
}

fn deserialize(origin: &str, text: &str) -> Result<ProfileFile, ConfigError> {
    let deserializer = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let line = inner
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        let problem = match line {
            Some(line) => format!("line {line}: {}", inner.message().trim()),
            None => inner.message().trim().to_string(),
        };
        let key = if key == "." { String::new() } else { key };
        error(
            origin,
            &key,
            problem,
            "see sip-profiles/default.toml for every key with its meaning",
        )
    })
}

fn validate(
    origin: &str,
    file: ProfileFile,
    env: &dyn Env,
    cli: &CliOverrides,
) -> Result<Profile, ConfigError> {
    // SIP.
    let mut port = file.sip.port;
    if let Some(text) = env.var("SOFIA_SIP_PORT") {
        port = text.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
            error(
                "environment",
                "SOFIA_SIP_PORT",
                format!("`{text}` is not a port number"),
                "set it to a port between 1 and 65535, e.g. SOFIA_SIP_PORT=5060",
            )
        })?;
    } else if port == 0 {
        return Err(error(
            origin,
            "sip.port",
            "port 0 is not a listening port",
            "use 5060, the standard SIP port, or another port above 0",
        ));
    }
    let mut listen = file.sip.listen;
    if let Some(text) = env.var("SOFIA_SIP_LISTEN") {
        listen = text.parse().map_err(|_| {
            error(
                "environment",
                "SOFIA_SIP_LISTEN",
                format!("`{text}` is not an IP address"),
                "set it to an address such as 0.0.0.0 or 127.0.0.1",
            )
        })?;
    }
    let mut transports = file.sip.transports;
    transports.sort();
    transports.dedup();
    if transports.is_empty() {
        return Err(error(
            origin,
            "sip.transports",
            "no transport is enabled",
            "list at least one of \"udp\", \"tcp\", \"tls\"",
        ));
    }
    let external_addr = env
        .var("SOFIA_EXTERNAL_ADDR")
        .or_else(|| Some(file.sip.external_addr.trim().to_string()).filter(|s| !s.is_empty()));
    let mut external_ip = None;
    if let Some(addr) = &external_addr {
        let (origin, key) = if env.var("SOFIA_EXTERNAL_ADDR").is_some() {
            ("environment", "SOFIA_EXTERNAL_ADDR")
        } else {
            (origin, "sip.external_addr")
        };
        if addr.contains(char::is_whitespace) || addr.contains(['<', '>', ';', '@']) {
            return Err(error(
                origin,
                key,
                format!("`{addr}` is not a host name or IP address"),
                "give the public IP or DNS name phones reach this switch at, e.g. 203.0.113.7",
            ));
        }
        external_ip = Some(resolve_external(origin, key, addr)?);
    }
    let realm = file.sip.realm.trim().to_string();
    if realm.is_empty() || realm.contains('"') {
        return Err(error(
            origin,
            "sip.realm",
            "the realm is empty or contains a quote",
            "use a plain name such as \"sofia-phone\"",
        ));
    }

    let sip_bounded = |key: &str, value: u32, min: u32, max: u32, fix: &str| {
        if value < min || value > max {
            return Err(error(
                origin,
                key,
                format!("{value} is outside {min}-{max}"),
                format!("use a value from {min} to {max} ({fix})"),
            ));
        }
        Ok(value)
    };
    let max_transactions = sip_bounded(
        "sip.max_transactions",
        file.sip.max_transactions,
        100,
        10_000_000,
        "default 20000 live transactions",
    )?;
    let max_tcp_connections = sip_bounded(
        "sip.max_tcp_connections",
        file.sip.max_tcp_connections,
        1,
        1_000_000,
        "default 4096 connections",
    )?;
    let max_tcp_connections_per_source = sip_bounded(
        "sip.max_tcp_connections_per_source",
        file.sip.max_tcp_connections_per_source,
        1,
        max_tcp_connections,
        "at most sip.max_tcp_connections; default 64 connections",
    )?;
    let tcp_idle_secs = sip_bounded(
        "sip.tcp_idle_secs",
        file.sip.tcp_idle_secs,
        5,
        86_400,
        "seconds, longer than the phones' keep-alive interval; default 300",
    )?;
    let mut tls_port = file.sip.tls_port;
    if let Some(text) = env.var("SOFIA_SIP_TLS_PORT") {
        tls_port = text.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
            error(
                "environment",
                "SOFIA_SIP_TLS_PORT",
                format!("`{text}` is not a port number"),
                "set it to a port between 1 and 65535, e.g. SOFIA_SIP_TLS_PORT=5061",
            )
        })?;
    } else if tls_port == 0 {
        return Err(error(
            origin,
            "sip.tls_port",
            "port 0 is not a listening port",
            "use 5061, the standard SIP over TLS port",
        ));
    }
    if transports.contains(&Transport::Tls) && tls_port == port {
        return Err(error(
            origin,
            "sip.tls_port",
            format!("TLS cannot share port {port} with TCP"),
            "use another port for TLS, e.g. 5061",
        ));
    }
    let tls_path = |value: &str| {
        let value = value.trim();
        (!value.is_empty()).then(|| PathBuf::from(value))
    };
    let tls_certificate = tls_path(&file.sip.tls_certificate);
    let tls_private_key = tls_path(&file.sip.tls_private_key);
    if tls_certificate.is_some() != tls_private_key.is_some() {
        let missing = if tls_certificate.is_none() {
            "sip.tls_certificate"
        } else {
            "sip.tls_private_key"
        };
        return Err(error(
            origin,
            missing,
            "a TLS certificate needs its private key and the other way round",
            "set both sip.tls_certificate and sip.tls_private_key, or neither (a self-signed pair is generated)",
        ));
    }

    // Registration.
    let reg = file.registration;
    if reg.min_expires == 0 || reg.min_expires > reg.max_expires {
        return Err(error(
            origin,
            "registration.min_expires",
            format!(
                "min_expires {} must be above 0 and at most max_expires {}",
                reg.min_expires, reg.max_expires
            ),
            "RFC 3261 suggests 60 and 3600",
        ));
    }
    if !(reg.min_expires..=reg.max_expires).contains(&reg.default_expires) {
        return Err(error(
            origin,
            "registration.default_expires",
            format!(
                "{} is outside min_expires..max_expires ({}..{})",
                reg.default_expires, reg.min_expires, reg.max_expires
            ),
            "pick a value between the two bounds",
        ));
    }
    if reg.max_contacts_per_aor == 0 {
        return Err(error(
            origin,
            "registration.max_contacts_per_aor",
            "0 would refuse every registration",
            "use 1 or more (5 suits phones that leave stale bindings after a restart)",
        ));
    }

    // Auth.
    let auth = file.auth;
    if auth.nonce_ttl_secs < 10 {
        return Err(error(
            origin,
            "auth.nonce_ttl_secs",
            format!(
                "{} s is too short for a phone to answer a challenge",
                auth.nonce_ttl_secs
            ),
            "use 300 or so",
        ));
    }

    // RTP.
    let (ports_origin, ports_key, ports_text) = match env.var("SOFIA_RTP_PORTS") {
        Some(text) => ("environment", "SOFIA_RTP_PORTS", text),
        None => (origin, "rtp.ports", file.rtp.ports),
    };
    let ports = PortRange::parse(&ports_text).map_err(|problem| {
        error(
            ports_origin,
            ports_key,
            problem,
            "write an even first port and a higher last port, e.g. \"16384-16583\"",
        )
    })?;
    let mut codecs = file.rtp.codecs;
    let mut seen = Vec::new();
    codecs.retain(|c| {
        let new = !seen.contains(c);
        seen.push(*c);
        new
    });
    if codecs.is_empty() {
        return Err(error(
            origin,
            "rtp.codecs",
            "no codec is enabled",
            "list codecs in order of preference, e.g. [\"PCMU\", \"PCMA\", \"opus\"]",
        ));
    }

    // Calls.
    let calls = file.calls;
    if calls.answer_delay_ms > 60_000 {
        return Err(error(
            origin,
            "calls.answer_delay_ms",
            format!("{} ms of ringing exceeds a minute", calls.answer_delay_ms),
            "use 0 to answer at once, or a few thousand at most",
        ));
    }
    if !(5..=300).contains(&calls.ring_secs) {
        return Err(error(
            origin,
            "calls.ring_secs",
            format!("{} s is outside 5-300", calls.ring_secs),
            "write how long a call to a phone rings before the caller gets 408, e.g. 30",
        ));
    }
    if calls.max_duration_secs == 0 || calls.rtp_timeout_secs == 0 {
        let key = if calls.max_duration_secs == 0 {
            "calls.max_duration_secs"
        } else {
            "calls.rtp_timeout_secs"
        };
        return Err(error(
            origin,
            key,
            "0 would end every call at once",
            "use a number of seconds above 0 (defaults: 3600 and 30)",
        ));
    }

    if calls.drain_secs > 3600 {
        return Err(error(
            origin,
            "calls.drain_secs",
            format!("{} s of draining exceeds an hour", calls.drain_secs),
            "use 0 to hang up at once on SIGTERM, or up to 3600 (default 30)",
        ));
    }

    if calls.max_calls > 1_000_000 {
        return Err(error(
            origin,
            "calls.max_calls",
            format!("{} is outside 0-1000000", calls.max_calls),
            "use 0 for automatic (the RTP range's capacity, at most 500 per CPU core) or a number of calls up to 1000000",
        ));
    }
    if !(1..=10_000).contains(&calls.max_calls_per_user) {
        return Err(error(
            origin,
            "calls.max_calls_per_user",
            format!("{} is outside 1-10000", calls.max_calls_per_user),
            "use a number of calls from 1 to 10000 (default 8; 0 would refuse every call)",
        ));
    }

    // HTTP.
    let (http_origin, http_key, http_text) = match env.var("SOFIA_HTTP_ADDR") {
        Some(text) => ("environment", "SOFIA_HTTP_ADDR", text),
        None => (origin, "http.listen", file.http.listen),
    };
    let http_listen: SocketAddr = http_text.parse().map_err(|_| {
        error(
            http_origin,
            http_key,
            format!("`{http_text}` is not an address:port"),
            "write it as IP:PORT, e.g. 127.0.0.1:8080",
        )
    })?;

    // Storage.
    let data_dir = cli
        .data_dir
        .clone()
        .or_else(|| env.var("SOFIA_DATA_DIR").map(PathBuf::from))
        .or_else(|| {
            Some(PathBuf::from(file.storage.data_dir.trim())).filter(|p| !p.as_os_str().is_empty())
        })
        .unwrap_or_else(|| default_data_dir(env));
    let configured_models_dir = env.var("SOFIA_MODELS_DIR").map(PathBuf::from).or_else(|| {
        Some(PathBuf::from(file.storage.models_dir.trim())).filter(|p| !p.as_os_str().is_empty())
    });
    let (models_dir, models_note) = match configured_models_dir {
        Some(dir) => (dir, None),
        None => default_models_dir(env, &data_dir),
    };

    let agent = agent_settings(origin, file.agent, env)?;
    let memory = memory_settings(origin, file.memory)?;

    // Users.
    let users = match env.var("SOFIA_USERS") {
        Some(text) => parse_users_env(&text)?,
        None => file
            .users
            .into_iter()
            .map(|(extension, user)| {
                check_extension(origin, &format!("users.{extension}"), &extension)?;
                let password = match user.password {
                    Some(p) if !p.is_empty() => Password::Given(p),
                    _ => Password::Generated,
                };
                Ok(User {
                    extension,
                    password,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?,
    };

    // Dialplan.
    let mut dialplan = Vec::new();
    for (extension, application) in file.dialplan {
        check_extension(origin, &format!("dialplan.{extension}"), &extension)?;
        if users.iter().any(|u| u.extension == extension) {
            return Err(error(
                origin,
                &format!("dialplan.{extension}"),
                format!("extension {extension} is both a user and a dialplan entry"),
                "give the application an extension no user has",
            ));
        }
        dialplan.push(Route {
            extension,
            application,
        });
    }

    Ok(Profile {
        origin: origin.to_string(),
        sip: SipSettings {
            listen,
            port,
            transports,
            external_addr,
            external_ip,
            realm,
            max_transactions,
            max_tcp_connections,
            max_tcp_connections_per_source,
            tcp_idle_secs,
            tls_port,
            tls_certificate,
            tls_private_key,
        },
        registration: RegistrationSettings {
            min_expires: reg.min_expires,
            max_expires: reg.max_expires,
            default_expires: reg.default_expires,
            max_contacts_per_aor: reg.max_contacts_per_aor,
            keepalive_secs: reg.keepalive_secs,
        },
        auth: AuthSettings {
            register: auth.register,
            invite: auth.invite,
            nonce_ttl_secs: auth.nonce_ttl_secs,
            failures_before_block: auth.failures_before_block,
            block_secs: auth.block_secs,
        },
        rtp: RtpSettings {
            ports,
            codecs,
            srtp: file.rtp.srtp,
        },
        calls: CallSettings {
            answer_delay_ms: calls.answer_delay_ms,
            max_duration_secs: calls.max_duration_secs,
            rtp_timeout_secs: calls.rtp_timeout_secs,
            drain_secs: calls.drain_secs,
            max_calls: calls.max_calls,
            max_calls_per_user: calls.max_calls_per_user,
            ring_secs: calls.ring_secs,
        },
        http_listen,
        data_dir,
        models_dir,
        models_note,
        whisper_model: file.stt.model,
        agent,
        memory,
        users,
        dialplan,
    })
}

fn memory_settings(origin: &str, file: MemoryFile) -> Result<MemorySettings, ConfigError> {
    if file.retention_days > 36_500 {
        return Err(error(
            origin,
            "memory.retention_days",
            format!("{} days is more than a century", file.retention_days),
            "use a number of days up to 36500, or 0 to keep memories until they fade",
        ));
    }
    if file.keep_recent_turns > 1_000_000 {
        return Err(error(
            origin,
            "memory.keep_recent_turns",
            format!("{} is outside 0-1000000", file.keep_recent_turns),
            "use a number of turns from 0 to 1000000",
        ));
    }
    if !(10..=2000).contains(&file.recall_budget_ms) {
        return Err(error(
            origin,
            "memory.recall_budget_ms",
            format!("{} ms is outside 10-2000", file.recall_budget_ms),
            "use a value from 10 to 2000 ms (recall takes tens of ms; longer delays replies)",
        ));
    }
    Ok(MemorySettings {
        retention_days: (file.retention_days > 0).then_some(file.retention_days),
        keep_recent_turns: file.keep_recent_turns,
        recall_budget_ms: file.recall_budget_ms,
    })
}

/// The `[agent]` section with `SOFIA_LLM_URL`, `SOFIA_LLM_MODEL` and `SOFIA_LLM_API_KEY`
/// applied (the key is better kept out of the profile file).
fn agent_settings(
    origin: &str,
    file: AgentFile,
    env: &dyn Env,
) -> Result<AgentSettings, ConfigError> {
    let bounded = |key: &str, value: u32, min: u32, max: u32, unit: &str| {
        if value < min || value > max {
            return Err(error(
                origin,
                key,
                format!("{value} {unit} is outside {min}-{max}"),
                format!("use a value from {min} to {max} {unit}"),
            ));
        }
        Ok(value)
    };
    let end_of_turn = match file.end_of_turn.trim() {
        "model" => EndOfTurnMode::Model,
        "silence" => EndOfTurnMode::Silence,
        other => {
            return Err(error(
                origin,
                "agent.end_of_turn",
                format!("`{other}` is not an end-of-turn mode"),
                "use \"model\" (Smart Turn judges whether the caller has finished) or \"silence\" (the turn ends after agent.end_of_turn_ms of silence)",
            ))
        }
    };
    let end_of_turn_ms = bounded("agent.end_of_turn_ms", file.end_of_turn_ms, 100, 5000, "ms")?;
    let turn_check_ms = bounded("agent.turn_check_ms", file.turn_check_ms, 60, 1000, "ms")?;
    let end_of_turn_fallback_ms = bounded(
        "agent.end_of_turn_fallback_ms",
        file.end_of_turn_fallback_ms,
        300,
        5000,
        "ms",
    )?;
    if end_of_turn_fallback_ms <= turn_check_ms {
        return Err(error(
            origin,
            "agent.end_of_turn_fallback_ms",
            format!(
                "{end_of_turn_fallback_ms} ms is not longer than agent.turn_check_ms ({turn_check_ms} ms)"
            ),
            "make the fallback longer than the check, e.g. turn_check_ms = 200 and end_of_turn_fallback_ms = 1600",
        ));
    }
    let min_speech_ms = bounded("agent.min_speech_ms", file.min_speech_ms, 20, 5000, "ms")?;
    let max_utterance_secs = bounded(
        "agent.max_utterance_secs",
        file.max_utterance_secs,
        1,
        30,
        "seconds (Whisper hears at most 30 s at once)",
    )?;
    let silence_timeout_secs = bounded(
        "agent.silence_timeout_secs",
        file.silence_timeout_secs,
        1,
        3600,
        "seconds",
    )?;
    let llm_timeout_secs = bounded(
        "agent.llm_timeout_secs",
        file.llm_timeout_secs,
        1,
        600,
        "seconds",
    )?;
    let llm_first_text_timeout_ms = bounded(
        "agent.llm_first_text_timeout_ms",
        file.llm_first_text_timeout_ms,
        100,
        600_000,
        "milliseconds",
    )?;
    if u64::from(llm_first_text_timeout_ms) > u64::from(llm_timeout_secs) * 1000 {
        return Err(error(
            origin,
            "agent.llm_first_text_timeout_ms",
            format!(
                "{llm_first_text_timeout_ms} ms is longer than agent.llm_timeout_secs ({llm_timeout_secs} s)"
            ),
            "make the wait for the first words no longer than the wait for the whole reply",
        ));
    }
    let breaker_failures = bounded(
        "agent.breaker_failures",
        file.breaker_failures,
        1,
        1000,
        "consecutive failures",
    )?;
    let breaker_open_secs = bounded(
        "agent.breaker_open_secs",
        file.breaker_open_secs,
        1,
        3600,
        "seconds",
    )?;
    let max_calls = bounded(
        "agent.max_calls",
        file.max_calls,
        0,
        100_000,
        "calls (0: automatic, 2 per CPU core)",
    )?;
    let handoff_extension = file.handoff_extension.trim().to_string();
    if !handoff_extension.is_empty() {
        check_extension(origin, "agent.handoff_extension", &handoff_extension)?;
    }
    for (i, ext) in file.handoff_allowed.iter().enumerate() {
        check_extension(origin, &format!("agent.handoff_allowed[{i}]"), ext)?;
    }
    let (url_origin, url_key, url) = match env.var("SOFIA_LLM_URL") {
        Some(url) => ("environment", "SOFIA_LLM_URL", url),
        None => (origin, "agent.llm_url", file.llm_url),
    };
    let url = url.trim().trim_end_matches('/').to_string();
    if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
        return Err(error(
            url_origin,
            url_key,
            format!("`{url}` is not an http:// or https:// URL"),
            "give the endpoint's base URL up to /v1, e.g. http://127.0.0.1:11434/v1, or leave it empty for the built-in responder",
        ));
    }
    let llm_model = env.var("SOFIA_LLM_MODEL").unwrap_or(file.llm_model);
    let llm_api_key = env
        .var("SOFIA_LLM_API_KEY")
        .unwrap_or(file.llm_api_key)
        .trim()
        .to_string();
    Ok(AgentSettings {
        end_of_turn,
        end_of_turn_ms,
        turn_check_ms,
        end_of_turn_fallback_ms,
        min_speech_ms,
        max_utterance_secs,
        silence_timeout_secs,
        llm_url: (!url.is_empty()).then_some(url),
        llm_model,
        llm_api_key: (!llm_api_key.is_empty()).then_some(llm_api_key),
        llm_timeout_secs,
        llm_first_text_timeout_ms,
        breaker_failures,
        breaker_open_secs,
        max_calls,
        handoff_extension: (!handoff_extension.is_empty()).then_some(handoff_extension),
        handoff_allowed: file.handoff_allowed,
        echo_suppression: file.echo_suppression,
    })
}

/// `sip.external_addr` as an IP address: the literal itself (brackets allowed around
/// IPv6), else the name resolved now, IPv4 preferred, so that SDP carries an address.
fn resolve_external(origin: &str, key: &str, addr: &str) -> Result<IpAddr, ConfigError> {
    let literal = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return Ok(ip);
    }
    let fix = "use an IP address or a name that resolves, e.g. 203.0.113.7";
    let resolved: Vec<IpAddr> = match (addr, 0).to_socket_addrs() {
        Ok(addrs) => addrs.map(|a| a.ip()).collect(),
        Err(e) => {
            return Err(error(
                origin,
                key,
                format!("`{addr}` does not resolve: {e}"),
                fix,
            ))
        }
    };
    resolved
        .iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| resolved.first())
        .copied()
        .ok_or_else(|| error(origin, key, format!("`{addr}` resolves to no address"), fix))
}

/// `$XDG_DATA_HOME/sofia-phone`, else `$HOME/.local/share/sofia-phone`, else
/// `/var/lib/sofia-phone`.
/// The model files' default home: `$XDG_CACHE_HOME/sofia-phone/models`, else
/// `$HOME/.cache/sofia-phone/models`, else `/var/cache/sofia-phone/models`. Models are
/// the same for every data dir (they are fetched, verified, and can be fetched again),
/// so they are a cache, not per-data-dir state.
///
/// Until version 0.1 they lived in `<data_dir>/models`. While the cache holds none and
/// such a directory does (this data dir's, or the default data dir's), that one is used
/// and the returned note says so: an existing install keeps working without fetching
/// hundreds of megabytes again.
pub fn default_models_dir(env: &dyn Env, data_dir: &Path) -> (PathBuf, Option<String>) {
    let cache = match (env.var("XDG_CACHE_HOME"), env.var("HOME")) {
        (Some(xdg), _) if !xdg.is_empty() => PathBuf::from(xdg).join("sofia-phone/models"),
        (_, Some(home)) => PathBuf::from(home).join(".cache/sofia-phone/models"),
        _ => PathBuf::from("/var/cache/sofia-phone/models"),
    };
    if holds_models(&cache) {
        return (cache, None);
    }
    let old = [
        data_dir.join("models"),
        default_data_dir(env).join("models"),
    ];
    match old.into_iter().find(|dir| holds_models(dir)) {
        Some(old) => {
            let parent = cache.parent().unwrap_or(&cache);
            let note = format!(
                "models: using {} (where earlier versions kept them); models are now a cache shared by every data dir, in {} by default: move them there (mkdir -p {} && mv {} {}) or set storage.models_dir",
                old.display(),
                cache.display(),
                parent.display(),
                old.display(),
                cache.display()
            );
            (old, Some(note))
        }
        None => (cache, None),
    }
}

/// Whether `dir` has anything in it besides an unfinished download.
fn holds_models(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name() != std::ffi::OsStr::new(".download"))
    })
}

fn default_data_dir(env: &dyn Env) -> PathBuf {
    if let Some(xdg) = env.var("XDG_DATA_HOME") {
        return PathBuf::from(xdg).join("sofia-phone");
    }
    match env.var("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/sofia-phone"),
        None => PathBuf::from("/var/lib/sofia-phone"),
    }
}

/// Extensions are the user part of a SIP URI: keep them to digits and simple token
/// characters so they never need escaping.
fn check_extension(origin: &str, key: &str, extension: &str) -> Result<(), ConfigError> {
    let ok = !extension.is_empty()
        && extension.len() <= 32
        && extension
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
    if ok {
        Ok(())
    } else {
        Err(error(
            origin,
            key,
            format!("`{extension}` is not a valid extension"),
            "use digits or letters, '.', '_', '-', '+' (at most 32 characters), e.g. 1000",
        ))
    }
}

/// `SOFIA_USERS=1000:secret,1001:other`.
fn parse_users_env(text: &str) -> Result<Vec<User>, ConfigError> {
    let mut users: Vec<User> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (extension, password) =
            entry.split_once(':').ok_or_else(|| {
                error(
                "environment",
                "SOFIA_USERS",
                format!("entry `{}` has no password", entry.split(':').next().unwrap_or("")),
                "write EXTENSION:PASSWORD pairs separated by commas, e.g. 1000:secret,1001:other",
            )
            })?;
        check_extension("environment", "SOFIA_USERS", extension)?;
        if password.is_empty() {
            return Err(error(
                "environment",
                "SOFIA_USERS",
                format!("user {extension} has an empty password"),
                "give every user a password, e.g. 1000:secret",
            ));
        }
        if users.iter().any(|u| u.extension == extension) {
            return Err(error(
                "environment",
                "SOFIA_USERS",
                format!("user {extension} appears twice"),
                "list each extension once",
            ));
        }
        users.push(User {
            extension: extension.to_string(),
            password: Password::Given(password.to_string()),
        });
    }
    if users.is_empty() {
        return Err(error(
            "environment",
            "SOFIA_USERS",
            "no users given",
            "write EXTENSION:PASSWORD pairs, e.g. 1000:secret, or unset it to use the profile's users",
        ));
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&'static str, &'static str)]) -> BTreeMap<&'static str, &'static str> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn models_are_a_cache_shared_by_data_dirs_and_an_older_install_keeps_its_models() {
        let home = tempfile::tempdir().unwrap();
        let home_str: &'static str = home.path().to_str().unwrap().to_string().leak();
        let custom = home.path().join("custom-data");
        let cli = CliOverrides {
            data_dir: Some(custom.clone()),
        };
        let load = |cli: &CliOverrides| {
            parse(
                "test.toml",
                BUILTIN_PROFILE,
                &env(&[("HOME", home_str)]),
                cli,
            )
            .unwrap()
        };
        let cache = home.path().join(".cache/sofia-phone/models");
        // Nothing anywhere: the cache, whatever the data dir.
        assert_eq!(load(&cli).models_dir, cache);
        assert_eq!(load(&CliOverrides::default()).models_dir, cache);
        // An older install: models in the default data dir. Every data dir uses them,
        // and the note says where they should go.
        let old = home.path().join(".local/share/sofia-phone/models");
        std::fs::create_dir_all(old.join("vad")).unwrap();
        let p = load(&cli);
        assert_eq!(p.models_dir, old);
        let note = p.models_note.expect("a note about the old location");
        assert!(note.contains(&cache.display().to_string()), "{note}");
        assert_eq!(load(&CliOverrides::default()).models_dir, old);
        // Once the cache holds models, it wins.
        std::fs::create_dir_all(cache.join("vad")).unwrap();
        let p = load(&cli);
        assert_eq!((p.models_dir, p.models_note), (cache.clone(), None));
        // An unfinished download alone does not count as models.
        std::fs::remove_dir_all(&cache).unwrap();
        std::fs::create_dir_all(cache.join(".download")).unwrap();
        assert_eq!(load(&cli).models_dir, old);
        // The environment and the profile override all of it.
        let p = parse(
            "test.toml",
            BUILTIN_PROFILE,
            &env(&[("HOME", home_str), ("SOFIA_MODELS_DIR", "/opt/models")]),
            &cli,
        )
        .unwrap();
        assert_eq!((p.models_dir, p.models_note), ("/opt/models".into(), None));
        let text = BUILTIN_PROFILE.replace("models_dir = \"\"", "models_dir = \"/srv/models\"");
        let p = parse("test.toml", &text, &env(&[("HOME", home_str)]), &cli).unwrap();
        assert_eq!(p.models_dir, PathBuf::from("/srv/models"));
    }

    fn builtin(pairs: &[(&'static str, &'static str)]) -> Result<Profile, ConfigError> {
        parse(
            "test.toml",
            BUILTIN_PROFILE,
            &env(pairs),
            &CliOverrides::default(),
        )
    }

    #[test]
    fn default_profile_listens_on_5060_udp_and_tcp_with_rtp_from_16384() {
        let p = builtin(&[("HOME", "/home/x")]).unwrap();
        assert_eq!(p.sip.port, 5060);
        assert_eq!(p.sip.listen, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(p.sip.transports, vec![Transport::Udp, Transport::Tcp]);
        assert_eq!(p.rtp.ports.first, 16384);
        assert_eq!(p.registration.keepalive_secs, 30);
        assert_eq!(p.route("5555"), Some(Application::Agent));
        assert_eq!(p.route("9196"), Some(Application::Echo));
        assert_eq!(p.route("1234"), None);
        assert_eq!(
            p.data_dir,
            PathBuf::from("/home/x/.local/share/sofia-phone")
        );
        assert_eq!(
            p.models_dir,
            PathBuf::from("/home/x/.cache/sofia-phone/models")
        );
        assert_eq!(p.models_note, None);
    }

    #[test]
    fn default_profile_ships_no_shared_password() {
        let p = builtin(&[]).unwrap();
        assert!(!p.users.is_empty());
        assert!(p.users.iter().all(|u| u.password == Password::Generated));
    }

    #[test]
    fn environment_overrides_main_settings() {
        let p = builtin(&[
            ("SOFIA_SIP_PORT", "5070"),
            ("SOFIA_RTP_PORTS", "20000-20099"),
            ("SOFIA_EXTERNAL_ADDR", "203.0.113.7"),
            ("SOFIA_HTTP_ADDR", "127.0.0.1:9090"),
            ("SOFIA_DATA_DIR", "/srv/sofia"),
            ("SOFIA_USERS", "1000:secret,1001:other"),
            ("HOME", "/home/x"),
        ])
        .unwrap();
        assert_eq!(p.sip.port, 5070);
        assert_eq!(
            p.rtp.ports,
            PortRange {
                first: 20000,
                last: 20099
            }
        );
        assert_eq!(p.sip.external_addr.as_deref(), Some("203.0.113.7"));
        assert_eq!(
            p.http_listen,
            "127.0.0.1:9090".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(p.data_dir, PathBuf::from("/srv/sofia"));
        // Models are not per data dir.
        assert_eq!(
            p.models_dir,
            PathBuf::from("/home/x/.cache/sofia-phone/models")
        );
        assert_eq!(
            p.users,
            vec![
                User {
                    extension: "1000".into(),
                    password: Password::Given("secret".into())
                },
                User {
                    extension: "1001".into(),
                    password: Password::Given("other".into())
                },
            ]
        );
    }

    #[test]
    fn cli_data_dir_wins_over_environment() {
        let cli = CliOverrides {
            data_dir: Some("/from/cli".into()),
        };
        let p = parse(
            "t.toml",
            BUILTIN_PROFILE,
            &env(&[("SOFIA_DATA_DIR", "/from/env")]),
            &cli,
        )
        .unwrap();
        assert_eq!(p.data_dir, PathBuf::from("/from/cli"));
    }

    #[test]
    fn bad_environment_value_names_the_variable_and_the_fix() {
        let e = builtin(&[("SOFIA_RTP_PORTS", "16385-16400")]).unwrap_err();
        assert_eq!(e.origin, "environment");
        assert_eq!(e.key, "SOFIA_RTP_PORTS");
        assert!(e.problem.contains("odd"), "{e}");
        let e = builtin(&[("SOFIA_USERS", "1000")]).unwrap_err();
        assert_eq!(e.key, "SOFIA_USERS");
        let e = builtin(&[("SOFIA_SIP_PORT", "sixty")]).unwrap_err();
        assert_eq!(e.key, "SOFIA_SIP_PORT");
        let e = builtin(&[("SOFIA_HTTP_ADDR", "localhost")]).unwrap_err();
        assert_eq!(e.key, "SOFIA_HTTP_ADDR");
    }

    fn broken(from: &str, to: &str) -> ConfigError {
        assert!(BUILTIN_PROFILE.contains(from), "profile lacks {from:?}");
        let text = BUILTIN_PROFILE.replacen(from, to, 1);
        parse("bad.toml", &text, &env(&[]), &CliOverrides::default()).unwrap_err()
    }

    #[test]
    fn wrong_type_names_file_key_and_line() {
        let e = broken("port = 5060", "port = \"five\"");
        assert_eq!(e.origin, "bad.toml");
        assert_eq!(e.key, "sip.port");
        assert!(e.problem.starts_with("line "), "{e}");
        assert!(
            e.to_string().starts_with("bad.toml: `sip.port`: line "),
            "{e}"
        );
    }

    #[test]
    fn memory_settings_default_and_out_of_range_values_name_their_key() {
        let p = builtin(&[]).unwrap();
        assert_eq!(p.memory.retention_days, None);
        assert_eq!(p.memory.keep_recent_turns, 500);
        assert_eq!(p.memory.recall_budget_ms, 150);
        let e = broken("recall_budget_ms = 150", "recall_budget_ms = 5");
        assert_eq!(e.key, "memory.recall_budget_ms");
        assert!(e.fix.contains("10 to 2000"), "{e}");
        let e = broken("retention_days = 0", "retention_days = 99999");
        assert_eq!(e.key, "memory.retention_days");
        let text = BUILTIN_PROFILE.replacen("retention_days = 0", "retention_days = 30", 1);
        let p = parse("ok.toml", &text, &env(&[]), &CliOverrides::default()).unwrap();
        assert_eq!(p.memory.retention_days, Some(30));
    }

    #[test]
    fn misspelled_key_is_rejected_with_its_name() {
        let e = broken("realm =", "relm =");
        assert_eq!(e.key, "sip.relm");
        assert!(e.problem.contains("unknown field"), "{e}");
    }

    #[test]
    fn unknown_application_and_codec_are_rejected() {
        let e = broken("9196 = \"echo\"", "9196 = \"voicemail\"");
        assert_eq!(e.key, "dialplan.9196");
        let e = broken("\"PCMA\"", "\"G729\"");
        assert!(e.key.starts_with("rtp.codecs"), "{e}");
    }

    #[test]
    fn inconsistent_expiry_bounds_are_rejected() {
        let e = broken("min_expires = 60", "min_expires = 7200");
        assert_eq!(e.key, "registration.min_expires");
    }

    #[test]
    fn extension_used_twice_is_rejected() {
        let e = broken("9196 = \"echo\"", "1000 = \"echo\"");
        assert_eq!(e.key, "dialplan.1000");
    }

    #[test]
    fn sip_limits_default_and_out_of_range_values_name_their_key() {
        let p = builtin(&[]).unwrap();
        assert_eq!(p.sip.max_transactions, 20_000);
        assert_eq!(p.sip.max_tcp_connections, 4096);
        assert_eq!(p.sip.max_tcp_connections_per_source, 64);
        assert_eq!(p.sip.tcp_idle_secs, 300);
        let e = broken("max_transactions = 20000", "max_transactions = 99");
        assert_eq!(e.origin, "bad.toml");
        assert_eq!(e.key, "sip.max_transactions");
        assert!(e.fix.contains("100 to"), "{e}");
        let e = broken("max_tcp_connections = 4096", "max_tcp_connections = 0");
        assert_eq!(e.key, "sip.max_tcp_connections");
        let e = broken(
            "max_tcp_connections_per_source = 64",
            "max_tcp_connections_per_source = 0",
        );
        assert_eq!(e.key, "sip.max_tcp_connections_per_source");
        let e = broken("max_tcp_connections = 4096", "max_tcp_connections = 10");
        assert_eq!(e.key, "sip.max_tcp_connections_per_source", "{e}");
        assert!(e.fix.contains("1 to 10"), "{e}");
        let e = broken("tcp_idle_secs = 300", "tcp_idle_secs = 4");
        assert_eq!(e.key, "sip.tcp_idle_secs");
        assert!(e.fix.contains("5 to"), "{e}");
        // Omitted keys take the defaults too.
        let p = parse(
            "min.toml",
            "[sip]\n[rtp]\nports = \"16384-16583\"\n",
            &env(&[]),
            &CliOverrides::default(),
        )
        .unwrap();
        assert_eq!(p.sip.max_transactions, 20_000);
        assert_eq!(p.sip.tcp_idle_secs, 300);
        assert_eq!(p.calls.max_calls_per_user, 8);
    }

    #[test]
    fn call_limits_default_to_automatic_and_out_of_range_values_name_their_key() {
        let cores = std::thread::available_parallelism().unwrap().get();
        let p = builtin(&[]).unwrap();
        assert_eq!(p.calls.max_calls, 0);
        assert_eq!(p.calls.max_calls_per_user, 8);
        // Automatic: the RTP range holds 100 calls; 500 per core is more.
        assert_eq!(p.calls.max_calls(&p.rtp.ports), 100.min(500 * cores));
        assert_eq!(p.max_calls(), p.calls.max_calls(&p.rtp.ports));
        let wide = PortRange::parse("10000-60000").unwrap();
        assert_eq!(p.calls.max_calls(&wide), 25_000.min(500 * cores));
        let p = parse(
            "ok.toml",
            &BUILTIN_PROFILE.replacen("max_calls = 0", "max_calls = 7", 1),
            &env(&[]),
            &CliOverrides::default(),
        )
        .unwrap();
        assert_eq!(p.calls.max_calls, 7);
        assert_eq!(p.max_calls(), 7);
        let e = broken("max_calls = 0", "max_calls = 2000000");
        assert_eq!(e.key, "calls.max_calls");
        assert!(e.fix.contains("0 for automatic"), "{e}");
        let e = broken("max_calls_per_user = 8", "max_calls_per_user = 0");
        assert_eq!(e.key, "calls.max_calls_per_user");
        assert!(e.fix.contains("1 to 10000"), "{e}");
    }

    #[test]
    fn agent_max_calls_defaults_to_two_per_core_and_out_of_range_is_rejected() {
        let cores = std::thread::available_parallelism().unwrap().get();
        let p = builtin(&[]).unwrap();
        assert_eq!(p.agent.max_calls, 0);
        assert_eq!(p.agent.max_calls(), 2 * cores);
        let agent_key = "max_calls = 0\n# \"Connect me to a person\"";
        let text = BUILTIN_PROFILE.replacen(agent_key, &agent_key.replace("= 0", "= 3"), 1);
        let p = parse("ok.toml", &text, &env(&[]), &CliOverrides::default()).unwrap();
        assert_eq!(p.agent.max_calls(), 3);
        assert_eq!(p.calls.max_calls, 0, "the [calls] key is another one");
        let e = broken(agent_key, &agent_key.replace("= 0", "= 100001"));
        assert_eq!(e.key, "agent.max_calls");
        assert!(e.fix.contains("0 to 100000"), "{e}");
    }

    #[test]
    fn echo_suppression_is_on_by_default_can_be_turned_off_and_must_be_a_boolean() {
        assert!(builtin(&[]).unwrap().agent.echo_suppression);
        let key = "echo_suppression = true";
        let text = BUILTIN_PROFILE.replacen(key, "echo_suppression = false", 1);
        let p = parse("ok.toml", &text, &env(&[]), &CliOverrides::default()).unwrap();
        assert!(!p.agent.echo_suppression);
        let e = broken(key, "echo_suppression = \"yes\"");
        assert_eq!(
            (e.origin.as_str(), e.key.as_str()),
            ("bad.toml", "agent.echo_suppression")
        );
    }

    #[test]
    fn ring_time_tls_and_handoff_keys_default_and_name_themselves_when_wrong() {
        let p = builtin(&[]).unwrap();
        assert_eq!(p.calls.ring_secs, 30);
        assert_eq!(p.sip.tls_port, 5061);
        assert_eq!(p.sip.tls_certificate, None);
        assert_eq!(p.agent.handoff_extension.as_deref(), Some("1001"));
        assert!(p.agent.handoff_allowed.is_empty());
        assert_eq!(p.route("1001"), Some(Application::User));
        assert_eq!(p.route("4321"), None);
        let e = broken("ring_secs = 30", "ring_secs = 1");
        assert_eq!(e.key, "calls.ring_secs");
        let e = broken(
            "tls_certificate = \"\"",
            "tls_certificate = \"/etc/cert.pem\"",
        );
        assert_eq!(e.key, "sip.tls_private_key");
        let e = broken(
            "transports = [\"udp\", \"tcp\"]\n# SIP over TLS (sips:) listens here when transports has \"tls\" ($SOFIA_SIP_TLS_PORT).\ntls_port = 5061",
            "transports = [\"udp\", \"tcp\", \"tls\"]\ntls_port = 5060",
        );
        assert_eq!(e.key, "sip.tls_port");
        let e = broken(
            "handoff_extension = \"1001\"",
            "handoff_extension = \"10 01\"",
        );
        assert_eq!(e.key, "agent.handoff_extension");
        let e = broken("handoff_allowed = []", "handoff_allowed = [\"1001\", \"\"]");
        assert_eq!(e.key, "agent.handoff_allowed[1]");
        let e = builtin(&[("SOFIA_SIP_TLS_PORT", "x")]).unwrap_err();
        assert_eq!(e.key, "SOFIA_SIP_TLS_PORT");
        assert_eq!(p.rtp.srtp, Srtp::Optional);
        let e = broken("srtp = \"optional\"", "srtp = \"maybe\"");
        assert_eq!(e.key, "rtp.srtp");
    }

    #[test]
    fn external_addr_is_resolved_to_an_ip_for_sdp() {
        let p = builtin(&[]).unwrap();
        assert_eq!(p.sip.external_addr, None);
        assert_eq!(p.sip.external_ip, None);
        let p = builtin(&[("SOFIA_EXTERNAL_ADDR", "203.0.113.7")]).unwrap();
        assert_eq!(p.sip.external_ip, Some("203.0.113.7".parse().unwrap()));
        let p = builtin(&[("SOFIA_EXTERNAL_ADDR", "[2001:db8::1]")]).unwrap();
        assert_eq!(p.sip.external_ip, Some("2001:db8::1".parse().unwrap()));
        let text =
            BUILTIN_PROFILE.replacen("external_addr = \"\"", "external_addr = \"localhost\"", 1);
        let p = parse("ok.toml", &text, &env(&[]), &CliOverrides::default()).unwrap();
        // The name stays for Via and Contact; SDP gets the address, IPv4 preferred.
        assert_eq!(p.sip.external_addr.as_deref(), Some("localhost"));
        assert_eq!(p.sip.external_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let e = broken(
            "external_addr = \"\"",
            "external_addr = \"no-such-host.invalid\"",
        );
        assert_eq!(e.origin, "bad.toml");
        assert_eq!(e.key, "sip.external_addr");
        assert!(e.problem.contains("no-such-host.invalid"), "{e}");
        assert!(e.fix.contains("a name that resolves"), "{e}");
        let e = builtin(&[("SOFIA_EXTERNAL_ADDR", "no-such-host.invalid")]).unwrap_err();
        assert_eq!(e.origin, "environment");
        assert_eq!(e.key, "SOFIA_EXTERNAL_ADDR");
    }

    #[test]
    fn port_range_capacity_counts_rtp_rtcp_pairs() {
        assert_eq!(
            PortRange::parse("16384-16583").unwrap().call_capacity(),
            100
        );
        assert!(PortRange::parse("16384").is_err());
        assert!(PortRange::parse("80-100").is_err());
        assert!(PortRange::parse("16390-16384").is_err());
    }

    #[test]
    fn end_of_turn_defaults_to_the_model_and_bad_keys_name_themselves() {
        let p = builtin(&[]).unwrap();
        assert_eq!(p.agent.end_of_turn, EndOfTurnMode::Model);
        assert_eq!(p.agent.turn_check_ms, 200);
        assert_eq!(p.agent.end_of_turn_fallback_ms, 1600);
        assert_eq!(p.agent.end_of_turn_ms, 600);
        let key = "end_of_turn = \"model\"";
        let text = BUILTIN_PROFILE.replacen(key, "end_of_turn = \"silence\"", 1);
        let p = parse("ok.toml", &text, &env(&[]), &CliOverrides::default()).unwrap();
        assert_eq!(p.agent.end_of_turn, EndOfTurnMode::Silence);
        let e = broken(key, "end_of_turn = \"smart\"");
        assert_eq!(e.key, "agent.end_of_turn");
        assert!(e.to_string().contains("bad.toml"), "{e}");
        assert!(e.fix.contains("\"silence\""), "{e}");
        let e = broken("turn_check_ms = 200", "turn_check_ms = 20");
        assert_eq!(e.key, "agent.turn_check_ms");
        let e = broken(
            "end_of_turn_fallback_ms = 1600",
            "end_of_turn_fallback_ms = 150",
        );
        assert_eq!(e.key, "agent.end_of_turn_fallback_ms");
        let e = broken(
            "turn_check_ms = 200\nend_of_turn_fallback_ms = 1600",
            "turn_check_ms = 900\nend_of_turn_fallback_ms = 800",
        );
        assert_eq!(e.key, "agent.end_of_turn_fallback_ms", "{e}");
        assert!(e.fix.contains("longer than the check"), "{e}");
    }
}
