//! The generated code for `tests/protos/golden.proto`, compared with the files in
//! `tests/golden/`. `PLEXUS_BLESS=1 cargo test -p plexus-build` rewrites them after a change
//! to the generator; the diff then shows what users' generated code gains or loses.

use std::fs;
use std::path::Path;

fn generate(out: &Path) {
    plexus_build::configure()
        .out_dir(out)
        .bytes([".plexus.golden.v1.Feature.Detail.blob"])
        .emit_rerun_if_changed(false)
        .compile_protos(&["golden.proto"], &["tests/protos"])
        .expect("golden.proto compiles");
}

#[test]
fn generated_code_matches_the_golden_files() {
    let out = tempfile::tempdir().unwrap();
    generate(out.path());
    let golden = Path::new("tests/golden");
    let mut names: Vec<String> = fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["plexus.common.rs", "plexus.golden.v1.rs"]);
    let bless = std::env::var_os("PLEXUS_BLESS").is_some();
    for name in names {
        let got = fs::read_to_string(out.path().join(&name)).unwrap();
        let path = golden.join(&name);
        if bless {
            fs::write(&path, &got).unwrap();
            continue;
        }
        let want = fs::read_to_string(&path).unwrap_or_default();
        assert!(
            got == want,
            "{name} differs from {}; rerun with PLEXUS_BLESS=1 and review the diff",
            path.display()
        );
    }
}
