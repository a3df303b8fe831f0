//! The command line (contract §5).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

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
    /// Run the simulators of AGORA, Pôle emploi and ATEXO SEM's return endpoint, for rehearsals.
    Sandbox {
        #[arg(long, default_value_t = 8090)]
        port: u16,
    },
    /// Decode and validate a file, sending nothing; exit 1 when any dossier is invalid.
    Validate {
        /// Which system's format the file is in.
        #[arg(long)]
        system: InputSystem,
        /// The file: an ATEXO SEM `exportSEM` XML, or one OUIFORM orientation (JSON).
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputSystem {
    AtexoSem,
    Ouiform,
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
        Command::Sandbox { port } => crate::commands::serve::sandbox(port),
        Command::Validate {
            system,
            file,
            format,
        } => crate::commands::validate::run(system, &file, format, &mut out),
        Command::Mapping { format } => crate::commands::mapping::run(format, &mut out),
        Command::Rules => crate::commands::rules::run(&mut out),
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
