//! The layering rule of `src/lib.rs`, checked on the source: a stage imports only the
//! stages after it in the data flow (downstream) and the shared modules; shared modules
//! import only each other; nothing but the wiring layer (`app`) imports `app`. Because
//! every import points forward in one order, the module graph has no loop.

use std::path::Path;

/// The stages, in data-flow order.
const STAGES: [&str; 8] = [
    "ingress",
    "event",
    "admission",
    "overflow",
    "log",
    "ring",
    "writer",
    "sink",
];
/// Modules every stage may use, which use no stage.
const SHARED: [&str; 4] = ["encoded", "segment", "observe", "shutdown"];
const WIRING: &str = "app";

/// The top-level module a source file belongs to (`src/ingress/body.rs` → `ingress`).
fn owner(path: &Path, src: &Path) -> String {
    let relative = path.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_str().unwrap().trim_end_matches(".rs").to_owned()
}

/// Every top-level module named by a `crate::` path in `text`.
fn crate_references(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((n + 1, name));
            }
            rest = after;
        }
    }
    found
}

fn allowed(from: &str, to: &str) -> bool {
    if from == to || from == WIRING {
        return true;
    }
    if SHARED.contains(&from) {
        return SHARED.contains(&to);
    }
    match (
        STAGES.iter().position(|s| *s == from),
        STAGES.iter().position(|s| *s == to),
    ) {
        (Some(a), Some(b)) => b > a,
        (Some(_), None) => SHARED.contains(&to),
        _ => false,
    }
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn stages_import_only_downstream_and_nothing_imports_the_wiring() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut modules = std::collections::BTreeSet::new();
    for file in &files {
        let from = owner(file, &src);
        if from == "lib" || from == "main" {
            continue;
        }
        modules.insert(from.clone());
        let text = std::fs::read_to_string(file).unwrap();
        for (line, to) in crate_references(&text) {
            if !allowed(&from, &to) {
                violations.push(format!(
                    "{}:{line}: {from} imports {to}",
                    file.strip_prefix(&src).unwrap().display()
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    // Every module has a place in the rule (a new one must be given one here).
    for module in &modules {
        assert!(
            STAGES.contains(&module.as_str())
                || SHARED.contains(&module.as_str())
                || module == WIRING,
            "src/{module} is neither a stage, shared nor wiring"
        );
    }
}

#[test]
fn the_checker_sees_an_upstream_import() {
    let text =
        "use crate::ingress::IngressContext;\nlet x = crate::app::config::Config::default();";
    let found = crate_references(text);
    assert_eq!(found, [(1, "ingress".to_owned()), (2, "app".to_owned())]);
    assert!(!allowed("writer", "ingress"), "upstream");
    assert!(!allowed("sink", "app"), "wiring");
    assert!(!allowed("segment", "sink"), "shared importing a stage");
    assert!(allowed("ingress", "sink") && allowed("sink", "segment"));
}
