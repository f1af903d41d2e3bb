//! docs/LIFECYCLE.md names the test beside each row; this keeps those names true.

use std::path::Path;

#[test]
fn every_test_named_in_the_lifecycle_document_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc =
        std::fs::read_to_string(root.join("docs/LIFECYCLE.md")).expect("docs/LIFECYCLE.md exists");
    let mut named = 0;
    for reference in doc.split('`').skip(1).step_by(2) {
        let Some((file, function)) = reference.split_once("::") else {
            continue;
        };
        if !(file.ends_with(".rs") && (file.starts_with("src/") || file.starts_with("tests/"))) {
            continue;
        }
        let source = std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|_| panic!("{file} (named in LIFECYCLE.md) exists"));
        assert!(
            source.contains(&format!("fn {function}(")),
            "LIFECYCLE.md names `{reference}`, but {file} has no such test"
        );
        named += 1;
    }
    assert!(
        named >= 40,
        "the document should name the tests behind its rows (found {named})"
    );
}
