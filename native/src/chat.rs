//! `tm-run chat`: a conversation on stdin. Each line is appended to one session and answered
//! with streamed text; the session keeps its state between turns, so a turn costs its own
//! tokens, not the whole conversation's. Commands: `/save FILE`, `/load FILE`, `/reset`,
//! `/stats`, `/quit`.

use std::io::{BufRead, Write};
use std::path::Path;

use transmamba::session::{Engine, GenerateOptions, Generator, Session};
use transmamba::text::TextCodec;

use crate::generate::{open_session, save_session};
use crate::AnyResult;

const HELP: &str =
    "commands: /save FILE, /load FILE, /reset, /stats, /quit (anything else is your turn)";

pub fn chat(
    engine: &Engine,
    codec: &TextCodec,
    schedule: transmamba::Schedule,
    state: Option<&Path>,
    opts: GenerateOptions,
) -> AnyResult<()> {
    let mut session = open_session(engine, schedule, state)?;
    eprintln!(
        "[{} | transpoints {} | position {}]",
        engine.name(),
        session.schedule(),
        session.position()
    );
    eprintln!("[{HELP}]");
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line?;
        let trimmed = line.trim();
        if let Some(command) = trimmed.strip_prefix('/') {
            let (name, arg) = command.split_once(' ').unwrap_or((command, ""));
            let arg = arg.trim();
            // A failed command is reported and the conversation goes on.
            let result = match name {
                "quit" | "exit" => break,
                "save" if !arg.is_empty() => save_session(&mut session, Path::new(arg)).map(|n| {
                    format!(
                        "saved {} tokens to {arg} ({})",
                        session.position(),
                        transmamba::memory::format_bytes(n)
                    )
                }),
                "load" if !arg.is_empty() => {
                    open_session(engine, session.schedule().clone(), Some(Path::new(arg))).map(
                        |s| {
                            session = s;
                            format!(
                                "restored {arg}: position {}, transpoints {}",
                                session.position(),
                                session.schedule()
                            )
                        },
                    )
                }
                "reset" => session
                    .reset()
                    .map(|_| "a new conversation".to_string())
                    .map_err(Into::into),
                "stats" => Ok(stats(&session)),
                _ => Ok(HELP.to_string()),
            };
            match result {
                Ok(msg) => eprintln!("[{msg}]"),
                Err(e) => eprintln!("[error: {e}]"),
            }
            continue;
        }
        // A turn that fails before anything runs (a character outside the vocabulary) is
        // reported and the conversation goes on; an engine failure poisons the session, and
        // the next turn says so (/reset or /load recovers).
        if let Err(e) = turn(&mut session, codec, &opts, &line, &mut stdout) {
            writeln!(stdout)?;
            eprintln!("[error: {e}]");
        }
    }
    Ok(())
}

/// One turn: the user's line, then the streamed answer, ended by a newline in the sequence
/// too (so the next turn starts on a fresh line, as the printed text does).
fn turn(
    session: &mut Session,
    codec: &TextCodec,
    opts: &GenerateOptions,
    line: &str,
    stdout: &mut impl Write,
) -> AnyResult<()> {
    let prompt = codec.encode(&format!("{line}\n"))?;
    let mut generator = Generator::new(codec, opts)?;
    generator.start_blocking(session, &prompt)?;
    while let Some(step) = generator.next_blocking(session)? {
        write!(stdout, "{}", step.text)?;
        stdout.flush()?;
    }
    writeln!(stdout)?;
    for t in codec.encode("\n")? {
        session.push(t)?;
    }
    Ok(())
}

/// Position, cache bytes and, per layer, attention entries or SSM state.
fn stats(session: &Session) -> String {
    let layers: Vec<String> = session
        .layer_states()
        .iter()
        .enumerate()
        .map(|(i, &(entries, ssm))| {
            if ssm {
                format!("{i}: ssm state")
            } else {
                format!("{i}: {entries} attention entries")
            }
        })
        .collect();
    format!(
        "position {} | transpoints {} | cache {} | layers {}",
        session.position(),
        session.schedule(),
        transmamba::memory::format_bytes(session.cache_bytes()),
        layers.join(", ")
    )
}
