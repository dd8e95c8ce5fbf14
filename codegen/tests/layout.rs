//! Where generated code goes and which halves are written.

use std::fs;
use std::path::Path;

fn write_proto(dir: &Path, name: &str, source: &str) {
    fs::write(dir.join(name), source).unwrap();
}

const SERVICE: &str = "syntax = \"proto3\";\nmessage M {}\nservice S { rpc Do(M) returns (M); }\n";
const PACKAGED: &str =
    "syntax = \"proto3\";\npackage p;\nmessage M {}\nservice S { rpc Do(M) returns (M); }\n";

#[test]
fn a_file_without_a_package_goes_to_underscore_rs() {
    let dir = tempfile::tempdir().unwrap();
    write_proto(dir.path(), "bare.proto", SERVICE);
    plexus_build::configure()
        .out_dir(dir.path())
        .emit_rerun_if_changed(false)
        .compile_protos(&["bare.proto"], &[dir.path()])
        .unwrap();
    let code = fs::read_to_string(dir.path().join("_.rs")).unwrap();
    assert!(code.contains("\"/S/Do\""), "{code}");
    assert!(code.contains("pub mod s_client") && code.contains("pub mod s_server"));
}

#[test]
fn client_only_and_server_only() {
    for (client, server) in [(true, false), (false, true)] {
        let dir = tempfile::tempdir().unwrap();
        write_proto(dir.path(), "p.proto", PACKAGED);
        plexus_build::configure()
            .out_dir(dir.path())
            .build_client(client)
            .build_server(server)
            .emit_rerun_if_changed(false)
            .compile_protos(&["p.proto"], &[dir.path()])
            .unwrap();
        let code = fs::read_to_string(dir.path().join("p.rs")).unwrap();
        assert_eq!(code.contains("pub mod s_client"), client, "{code}");
        assert_eq!(code.contains("pub mod s_server"), server, "{code}");
        assert!(code.contains("pub struct M"), "messages are always written");
    }
}

#[test]
fn a_renamed_plexus_is_used_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    write_proto(dir.path(), "p.proto", PACKAGED);
    plexus_build::configure()
        .out_dir(dir.path())
        .plexus_path("crate::rpc")
        .emit_rerun_if_changed(false)
        .compile_protos(&["p.proto"], &[dir.path()])
        .unwrap();
    let code = fs::read_to_string(dir.path().join("p.rs")).unwrap();
    assert!(!code.contains("::plexus"), "{code}");
    assert!(code.contains("crate::rpc::prost::Message"), "{code}");
    assert!(code.contains("crate::rpc::Channel"), "{code}");
}
