//! The command line (contract §5).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use passerelle_adapters::System;

#[derive(Debug, Parser)]
#[command(
    name = "passerelle",
    version,
    about = "Interoperability gateway between vocational-training funding systems"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway. With no configuration it runs embedded (SQLite ledger, embedded queue
    /// under ./data) with AGORA pointed at the built-in sandbox.
    Serve {
        /// A TOML file layered over the defaults (then PASSERELLE__… variables).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Load existing ATEXO SEM exports (or another source's files, `--system`) into AGORA
    /// (reprise d'antériorité) through its lots, resumably; ends with a report. Exit 0 only when
    /// every owed dossier was accepted.
    Backfill {
        /// The ATEXO SEM exports (`exportSEM` XML), read in this order; with `--system`, files of
        /// that system's format.
        #[arg(long = "input", required = true, num_args = 1..)]
        inputs: Vec<PathBuf>,
        /// Which source the inputs come from: a system of the registry whose records come as
        /// files (a name it does not know is answered with the list). `--since` and
        /// `perimeter.excluded_categories` classify ATEXO SEM's dossiers; another source's
        /// records are in perimeter, as on its inbound route.
        #[arg(long, value_parser = parse_file_source, default_value = "atexo-sem")]
        system: System,
        /// Sessions starting before this date (YYYY-MM-DD) are out of perimeter
        /// [default: perimeter.backfill_since, 2017-01-01].
        #[arg(long)]
        since: Option<chrono::NaiveDate>,
        /// Decode, classify, validate and build every AGORA line, but store and send nothing.
        #[arg(long)]
        dry_run: bool,
        /// Go on from where an interrupted run stopped (its checkpoints).
        #[arg(long)]
        resume: bool,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        report: Option<PathBuf>,
        /// A TOML file layered over the defaults (then PASSERELLE__… variables).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the simulators of AGORA, Pôle emploi and ATEXO SEM's return endpoint, for rehearsals.
    /// (Absent from a build without the `sandbox` feature: production images.)
    #[cfg(feature = "sandbox")]
    Sandbox {
        /// The port to listen on.
        #[arg(long, default_value_t = 8090)]
        port: u16,
        /// The address to listen on; 0.0.0.0 in a container, so that other containers reach it.
        #[arg(long, default_value_t = std::net::IpAddr::from([127, 0, 0, 1]))]
        bind: std::net::IpAddr,
    },
    /// Decode and validate a file, sending nothing; exit 1 when any dossier is invalid.
    Validate {
        /// Which system's format the file is in: a source of the registry that gives files
        /// (a name it does not know is answered with the list).
        #[arg(long, value_parser = parse_file_source)]
        system: System,
        /// The file, in that system's format (an `exportSEM` XML, one orientation as JSON…).
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = ValidateFormat::Text)]
        format: ValidateFormat,
    },
    /// The field correspondence of each system with the canonical dossier and AGORA, and the
    /// trigger rules of each AGORA operation, generated from the adapters.
    Mapping {
        #[arg(long, value_enum, default_value_t = MappingFormat::Markdown)]
        format: MappingFormat,
    },
    /// Every rule code a rejection can carry, with what it checks.
    Rules,
    /// The configuration reference (every key, its type, default and meaning), generated from
    /// the settings structs; kept as docs/configuration.md.
    ConfigReference,
    /// The OpenAPI 3.1 document of the HTTP API (as `GET /openapi.json` serves it), generated
    /// from the routes and their bodies; kept as schemas/openapi.json.
    Openapi,
    /// The dead letters (*lettres mortes*): list them, or replay them so that their dossiers are
    /// reconciled again. Works on the configured ledger and queue; no running `serve` is needed
    /// (the replayed dossiers are delivered by whichever `serve` consumes the queue).
    #[command(name = "dead-letters")]
    DeadLetters {
        #[command(subcommand)]
        command: DeadLettersCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// The dead letters, oldest failure first; exit 0.
    List {
        #[command(flatten)]
        filter: DeadLetterFilterArgs,
        /// Also the dead letters already replayed (with their lineage).
        #[arg(long)]
        include_replayed: bool,
        #[arg(long, value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
        /// A TOML file layered over the defaults (then PASSERELLE__… variables).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Replays one dead letter, or with --all every dead letter not yet replayed that the filters
    /// select: each is marked replayed and its dossier's task published (broker-confirmed).
    /// Exit 1 when something could not be replayed.
    Replay {
        /// The dead letter's id (see `dead-letters list`).
        #[arg(
            required_unless_present = "all",
            conflicts_with_all = ["all", "DeadLetterFilterArgs"]
        )]
        id: Option<String>,
        /// Replay every dead letter the filters select; with no filter, every dead letter.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: DeadLetterFilterArgs,
        /// A TOML file layered over the defaults (then PASSERELLE__… variables).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Which dead letters: every filter given must match.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DeadLetterFilterArgs {
    /// Only toward this destination (`agora`).
    #[arg(long)]
    pub destination: Option<String>,
    /// Only with this reason code: an AGORA anomaly code (`AG-…`), `http.<status>`, `transport`
    /// or `lifecycle.irreconcilable`.
    #[arg(long)]
    pub code: Option<String>,
    /// Only those dead-lettered at or after this time (RFC 3339, e.g. 2019-09-02T10:15:00Z).
    #[arg(long, value_parser = rfc3339)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only those dead-lettered before this time (RFC 3339).
    #[arg(long, value_parser = rfc3339)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only this dossier's.
    #[arg(long)]
    pub dossier: Option<String>,
}

fn rfc3339(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("not an RFC 3339 date-time such as 2019-09-02T10:15:00Z ({e})"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    /// One line per dead letter, for people.
    Text,
    /// One JSON object per line, as `GET /v1/dead-letters` lists them.
    Json,
}

/// A source system whose records come as files, by its registry name.
fn parse_file_source(s: &str) -> Result<System, String> {
    let names: Vec<&str> = passerelle_adapters::sources::file_sources()
        .map(|src| src.system().as_str())
        .collect();
    s.parse::<System>()
        .ok()
        .filter(|system| names.contains(&system.as_str()))
        .ok_or_else(|| {
            format!(
                "not a system whose records come as files; one of: {}",
                names.join(", ")
            )
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ValidateFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MappingFormat {
    Markdown,
    Csv,
}

/// Parses the arguments and runs the command; the exit code follows contract §5.
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = match cli.command {
        Command::Serve { config } => crate::commands::serve::run(config.as_deref()),
        Command::Backfill {
            system,
            inputs,
            since,
            dry_run,
            resume,
            report,
            config,
        } => crate::commands::backfill::run(
            config.as_deref(),
            crate::backfill::Options {
                system,
                inputs,
                since,
                dry_run,
                resume,
                report,
                progress: crate::backfill::ProgressMode::Auto,
            },
            &mut out,
        ),
        #[cfg(feature = "sandbox")]
        Command::Sandbox { port, bind } => crate::commands::serve::sandbox(bind, port),
        Command::Validate {
            system,
            file,
            format,
        } => crate::commands::validate::run(system, &file, format, &mut out),
        Command::Mapping { format } => crate::commands::mapping::run(format, &mut out),
        Command::Rules => crate::commands::rules::run(&mut out),
        Command::ConfigReference => out
            .write_all(crate::config_reference::markdown().as_bytes())
            .map(|()| ExitCode::SUCCESS)
            .map_err(anyhow::Error::from),
        Command::Openapi => crate::routes::openapi::json()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .and_then(|doc| out.write_all(doc.as_bytes()).map_err(anyhow::Error::from))
            .map(|()| ExitCode::SUCCESS),
        Command::DeadLetters { command } => crate::commands::dead_letters::run(command, &mut out),
    };
    use std::io::Write;
    let flushed = out.flush();
    match (result, flushed) {
        (Ok(code), Ok(())) => code,
        (Err(e), _) => {
            eprintln!("passerelle: {e:#}");
            ExitCode::from(2)
        }
        (Ok(_), Err(e)) => {
            eprintln!("passerelle: cannot write the output: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "sandbox")]
    #[test]
    fn the_sandbox_listens_on_loopback_unless_told_otherwise() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Sandbox { port, bind }) => (bind.to_string(), port),
            other => panic!("{args:?}: {other:?}"),
        };
        assert_eq!(
            parse(&["passerelle", "sandbox"]),
            ("127.0.0.1".to_string(), 8090)
        );
        assert_eq!(
            parse(&[
                "passerelle",
                "sandbox",
                "--bind",
                "0.0.0.0",
                "--port",
                "8091"
            ]),
            ("0.0.0.0".to_string(), 8091)
        );
        assert!(Cli::try_parse_from(["passerelle", "sandbox", "--bind", "nowhere"]).is_err());
    }

    /// A production build (`--no-default-features`) has no `sandbox` command: it says so.
    #[cfg(not(feature = "sandbox"))]
    #[test]
    fn a_build_without_the_simulators_has_no_sandbox_command() {
        let e = Cli::try_parse_from(["passerelle", "sandbox"]).expect_err("no such command");
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidSubcommand);
    }

    #[test]
    fn a_replay_names_one_dead_letter_or_says_all() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.command);
        match parse(&["passerelle", "dead-letters", "replay", "dl-1"]) {
            Ok(Command::DeadLetters {
                command: DeadLettersCommand::Replay { id, all, .. },
            }) => assert_eq!((id.as_deref(), all), (Some("dl-1"), false)),
            other => panic!("{other:?}"),
        }
        match parse(&[
            "passerelle",
            "dead-letters",
            "replay",
            "--all",
            "--code",
            "AG-CERTIF",
            "--since",
            "2019-09-02T10:15:00+02:00",
        ]) {
            Ok(Command::DeadLetters {
                command:
                    DeadLettersCommand::Replay {
                        id, all, filter, ..
                    },
            }) => {
                assert_eq!((id, all), (None, true));
                assert_eq!(filter.code.as_deref(), Some("AG-CERTIF"));
                assert_eq!(
                    filter.since.map(|t| t.to_rfc3339()).as_deref(),
                    Some("2019-09-02T08:15:00+00:00")
                );
            }
            other => panic!("{other:?}"),
        }
        // Usage errors (exit 2): nothing named, both named, a filter on one id, a bad date.
        for args in [
            &["passerelle", "dead-letters", "replay"][..],
            &["passerelle", "dead-letters", "replay", "dl-1", "--all"],
            &[
                "passerelle",
                "dead-letters",
                "replay",
                "dl-1",
                "--code",
                "X",
            ],
            &["passerelle", "dead-letters", "list", "--since", "yesterday"],
        ] {
            let e = parse(args).expect_err("a usage error");
            assert!(e.use_stderr(), "{args:?}");
        }
    }
}
