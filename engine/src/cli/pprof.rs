//! `quench pprof`: the top table, flame graphs and diffs of profile files.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum PprofCommand {
    /// The `go tool pprof -top` table.
    Top {
        /// A profile (gzip-compressed protobuf, as net/http/pprof serves it).
        file: PathBuf,
        /// Rows to show; 0 shows every row, as `go tool pprof -top` does.
        #[arg(long, default_value_t = 0)]
        nodecount: usize,
        /// The sample type to rank by (inuse_space, alloc_objects, ...).
        #[arg(long)]
        sample_index: Option<String>,
    },
    /// An SVG flame graph.
    Flame {
        /// The profile.
        file: PathBuf,
        /// Where to write the SVG.
        #[arg(short, long)]
        output: PathBuf,
        /// The sample type to draw.
        #[arg(long)]
        sample_index: Option<String>,
    },
    /// Which functions grew between a baseline and a new profile.
    Diff {
        /// The baseline profile.
        base: PathBuf,
        /// The new profile.
        new: PathBuf,
        /// Rows to show.
        #[arg(long, default_value_t = 10)]
        nodecount: usize,
    },
}

/// Reads and decodes a profile, and picks the sample type.
fn load_profile(
    file: &std::path::Path,
    sample_index: Option<&str>,
) -> anyhow::Result<(quench_connectors::pprof::proto::Profile, usize)> {
    use quench_connectors::pprof;
    let bytes =
        std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let p = pprof::decode(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let index = match sample_index {
        None => pprof::top::default_index(&p),
        Some(name) => p
            .sample_type
            .iter()
            .position(|t| {
                p.string_table
                    .get(t.r#type as usize)
                    .is_some_and(|s| s == name)
            })
            .ok_or_else(|| {
                let names: Vec<&str> = p
                    .sample_type
                    .iter()
                    .filter_map(|t| p.string_table.get(t.r#type as usize).map(String::as_str))
                    .collect();
                anyhow::anyhow!(
                    "{}: no sample type {name:?} (it has {})",
                    file.display(),
                    names.join(", ")
                )
            })?,
    };
    Ok((p, index))
}

/// Runs a `quench pprof` command.
pub fn run(command: PprofCommand) -> anyhow::Result<()> {
    use quench_connectors::pprof::{flame, top};
    match command {
        PprofCommand::Top {
            file,
            nodecount,
            sample_index,
        } => {
            let (p, i) = load_profile(&file, sample_index.as_deref())?;
            let t = top::top(&p, i)?;
            print!("{}", top::render(&t, &p, nodecount));
        }
        PprofCommand::Flame {
            file,
            output,
            sample_index,
        } => {
            let (p, i) = load_profile(&file, sample_index.as_deref())?;
            let t = top::top(&p, i)?;
            let svg = flame::svg(
                &flame::folded(&p, i)?,
                &format!("{} ({})", file.display(), t.sample_type),
                &t.unit,
            )?;
            std::fs::write(&output, svg)?;
            println!("wrote {}", output.display());
        }
        PprofCommand::Diff {
            base,
            new,
            nodecount,
        } => {
            let (b, bi) = load_profile(&base, None)?;
            let (n, ni) = load_profile(&new, None)?;
            let family = quench_connectors::pprof::Family::of;
            if family(&b) != family(&n) {
                let what = |f: Option<quench_connectors::pprof::Family>| {
                    f.map_or("a profile of unknown sample types", |f| f.describe())
                };
                anyhow::bail!(
                    "{} is {} and {} is {}: a diff needs two profiles of one kind",
                    base.display(),
                    what(family(&b)),
                    new.display(),
                    what(family(&n))
                );
            }
            let changes = flame::diff(&top::top(&b, bi)?, &top::top(&n, ni)?);
            println!("{:>8} {:>8} {:>8}  function", "base%", "new%", "change");
            for c in changes.iter().take(nodecount) {
                println!(
                    "{:>7.2}% {:>7.2}% {:>+7.2}%  {}",
                    c.base_pct,
                    c.new_pct,
                    c.new_pct - c.base_pct,
                    c.function
                );
            }
        }
    }
    Ok(())
}
