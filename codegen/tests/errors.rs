//! A bad `.proto` fails the build with the file, line and column of the problem.

use std::fs;

fn compile(source: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("bad.proto"), source).unwrap();
    let err = plexus_build::configure()
        .out_dir(dir.path())
        .emit_rerun_if_changed(false)
        .compile_protos(&["bad.proto"], &[dir.path()])
        .expect_err("the proto is bad");
    // What a build script that returns the error from main prints is its Debug form.
    let debug = format!("{err:?}");
    assert_eq!(debug, err.to_string());
    eprintln!("{debug}");
    debug
}

#[test]
fn a_syntax_error_names_file_line_and_column() {
    let err = compile("syntax = \"proto3\";\n\nmessage Point {\n  int32 x = ;\n}\n");
    assert!(err.starts_with("bad.proto:4:13: "), "{err}");
}

#[test]
fn an_unknown_type_names_file_line_and_column() {
    let err = compile("syntax = \"proto3\";\nmessage A {\n  Missing m = 1;\n}\n");
    assert!(err.starts_with("bad.proto:3:3: "), "{err}");
    assert!(err.contains("Missing"), "{err}");
}

#[test]
fn a_missing_import_names_file_line_and_column() {
    let err = compile("syntax = \"proto3\";\nimport \"nowhere.proto\";\n");
    assert!(err.starts_with("bad.proto:2:1: "), "{err}");
    assert!(err.contains("nowhere.proto"), "{err}");
}

#[test]
fn a_missing_input_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = plexus_build::configure()
        .out_dir(dir.path())
        .emit_rerun_if_changed(false)
        .compile_protos(&["absent.proto"], &[dir.path()])
        .unwrap_err();
    assert!(err.to_string().contains("absent.proto"), "{err}");
}

#[test]
fn well_known_types_need_no_files_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("wkt.proto"),
        "syntax = \"proto3\";\npackage wkt;\nimport \"google/protobuf/duration.proto\";\n\
         import \"google/protobuf/struct.proto\";\nimport \"google/protobuf/any.proto\";\n\
         message M { google.protobuf.Duration d = 1; google.protobuf.Struct s = 2; \
         google.protobuf.Any a = 3; }\n",
    )
    .unwrap();
    plexus_build::configure()
        .out_dir(dir.path())
        .emit_rerun_if_changed(false)
        .compile_protos(&["wkt.proto"], &[dir.path()])
        .unwrap();
    let code = fs::read_to_string(dir.path().join("wkt.rs")).unwrap();
    for wkt in ["Duration", "Struct", "Any"] {
        let path = format!("::plexus::prost_types::{wkt}");
        assert!(code.contains(&path), "{path} not in:\n{code}");
    }
    // No google.protobuf file is written: the types come from prost-types.
    assert!(!dir.path().join("google.protobuf.rs").exists());
}

#[test]
fn a_descriptor_set_is_written_on_request() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("s.proto"),
        "syntax = \"proto3\";\npackage s;\nmessage M {}\nservice S { rpc Do(M) returns (M); }\n",
    )
    .unwrap();
    let path = dir.path().join("set.bin");
    plexus_build::configure()
        .out_dir(dir.path())
        .emit_rerun_if_changed(false)
        .file_descriptor_set_path(&path)
        .file_descriptor_set_name("named")
        .compile_protos(&["s.proto"], &[dir.path()])
        .unwrap();
    let bytes = fs::read(&path).unwrap();
    assert_eq!(fs::read(dir.path().join("named.bin")).unwrap(), bytes);
    let set: plexus::prost_types::FileDescriptorSet =
        plexus::prost::Message::decode(bytes.as_slice()).unwrap();
    let file = set.file.iter().find(|f| f.name() == "s.proto").unwrap();
    assert_eq!(file.service[0].name(), "S");
    assert!(
        file.source_code_info.is_some(),
        "comments are kept for reflection"
    );
}

#[test]
fn outside_build_scripts_an_out_dir_is_required() {
    // cargo sets OUT_DIR only for crates with a build script; this one has none.
    if std::env::var_os("OUT_DIR").is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("e.proto"), "syntax = \"proto3\";\n").unwrap();
    let err = plexus_build::configure()
        .emit_rerun_if_changed(false)
        .compile_protos(&["e.proto"], &[dir.path()])
        .unwrap_err();
    assert!(err.to_string().contains("OUT_DIR"), "{err}");
}
