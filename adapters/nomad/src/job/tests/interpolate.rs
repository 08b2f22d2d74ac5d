//! Driver strings as Nomad reads them (HCL2 templates, against `hcl-rs`).

use super::*;

#[test]
fn escapes_cannot_be_split_across_pieces() {
    // `$$$(X)` with a plain X: Kubernetes gives "$" then X's text; escaped piece by piece,
    // "$" + "{attr.unique.hostname}" was `${attr.unique.hostname}`, interpolated by Nomad.
    let spec = json!({"containers": [{"name": "c", "image": "i",
    "command": ["echo"], "args": ["$$$(X)", "${HOME}", "100%{x}", "$$$(PASS)", "a$$$$$(PASS)b"],
    "env": [
        {"name": "X", "value": "{attr.unique.hostname}"},
        {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}
    ]}]});
    let job = translate(json!({}), spec).unwrap().job;
    let args = job.task_groups[0].tasks[0].config["args"].clone();
    let args: Vec<String> = serde_json::from_value(args).unwrap();
    let read: Vec<String> = args.iter().map(|a| nomad_reads(a, &[("PASS", "pw")])).collect();
    assert_eq!(read, ["${attr.unique.hostname}", "${HOME}", "100%{x}", "$pw", "a$$pwb"]);
    assert_eq!(args[3], "${\"$\"}${PASS}");
    // The image never reaches the job unless it parses as a reference (the kubelet's
    // InvalidImageName), so `${...}` cannot be in it; it is escaped all the same.
    let p = pod_json(
        json!({}),
        json!({"containers": [{"name": "c", "image": "reg.example/${attr.unique.hostname}"}]}),
    );
    let refused = WorkloadSpec::from_pod(&p, &inputs()).map(|_| ()).unwrap_err();
    assert!(refused.to_string().starts_with("spec.containers[0].image: "), "{refused}");
}

fn piece() -> impl proptest::strategy::Strategy<Value = (bool, String)> {
    use proptest::prelude::*;
    prop_oneof![
        // Text dense in what HCL treats specially, and text of any kind.
        "[$%{}~\"\\\\\n⟦⟧a-c ]{0,10}".prop_map(|t| (false, t)),
        any::<String>().prop_map(|t| (false, t)),
        "[A-Z_][A-Z0-9_]{0,4}".prop_map(|n| (true, n)),
    ]
}

proptest::proptest! {
    /// For any text and variables, Nomad's reading of [`hcl_template`]'s output is the text
    /// with each variable's value in its place.
    #[test]
    fn any_text_and_variables_reach_the_task_as_written(
        pieces in proptest::collection::vec(piece(), 0..8)
    ) {
        let value = |name: &str| format!("<{name}>");
        let ps: Vec<Piece<'_>> = pieces
            .iter()
            .map(|(var, t)| if *var { Piece::Var(t) } else { Piece::Text(t) })
            .collect();
        let expected: String = pieces
            .iter()
            .map(|(var, t)| if *var { value(t) } else { t.clone() })
            .collect();
        let values: Vec<(String, String)> =
            pieces.iter().filter(|(v, _)| *v).map(|(_, n)| (n.clone(), value(n))).collect();
        let vars: Vec<(&str, &str)> =
            values.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        proptest::prop_assert_eq!(nomad_reads(&hcl_template(&ps), &vars), expected);
    }
}
