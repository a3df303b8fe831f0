//! Writes the hostile ATEXO SEM exports of `passerelle_tests::hostile`, one file per shape
//! (`hostile_<shape>.xml`), each at most `--size` bytes:
//! `gen_hostile --size BYTES --out DIR`.
//!
//! The fuzz corpus holds small ones (its seeds), written by
//! `cargo run -p passerelle-tests --bin gen_hostile -- --size 32768 --out adapters/fuzz/corpus/atexo_sem_decode`;
//! at `--size 10485760` they are what the integration test posts.

use passerelle_tests::hostile::SHAPES;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut size = 32 * 1024;
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--size" => size = value()?.parse()?,
            "--out" => out = Some(value()?),
            "-h" | "--help" => {
                println!("gen_hostile --size BYTES --out DIR");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let dir = std::path::PathBuf::from(out.ok_or("--out DIR is required")?);
    for shape in SHAPES {
        let path = dir.join(format!("hostile_{}.xml", shape.name));
        std::fs::write(&path, shape.export(size))?;
        println!("{}: {}", path.display(), shape.what);
    }
    Ok(())
}
