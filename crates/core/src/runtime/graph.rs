//! The `dependsOn` graph: cycle detection with Tarjan's strongly connected components.

use crate::object::ObjectRef;
use std::collections::HashMap;

/// Every cycle among the given edges, each as the list of objects in it, in an order that
/// follows the edges and starts from the smallest reference (so messages are stable).
pub fn find_cycles(edges: &HashMap<ObjectRef, Vec<ObjectRef>>) -> Vec<Vec<ObjectRef>> {
    let mut nodes: Vec<&ObjectRef> = edges.keys().collect();
    nodes.sort();
    let index_of: HashMap<&ObjectRef, usize> =
        nodes.iter().enumerate().map(|(i, r)| (*r, i)).collect();
    let succ: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| {
            edges[*n]
                .iter()
                .filter_map(|d| index_of.get(d).copied())
                .collect()
        })
        .collect();

    // Iterative Tarjan, so deep graphs cannot overflow the stack.
    let n = nodes.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next = 0;
    let mut sccs = Vec::new();
    for start in 0..n {
        if index[start] != usize::MAX {
            continue;
        }
        let mut call: Vec<(usize, usize)> = vec![(start, 0)];
        while let Some(&mut (v, ref mut child)) = call.last_mut() {
            if *child == 0 && index[v] == usize::MAX {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if *child < succ[v].len() {
                let w = succ[v][*child];
                *child += 1;
                if index[w] == usize::MAX {
                    call.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            call.pop();
            if let Some(&(parent, _)) = call.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut comp = Vec::new();
                loop {
                    let w = stack.pop().expect("tarjan stack holds the component");
                    on_stack[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                let self_loop = comp.len() == 1 && succ[v].contains(&v);
                if comp.len() > 1 || self_loop {
                    sccs.push(comp);
                }
            }
        }
    }
    sccs.into_iter()
        .map(|comp| {
            order_cycle(&comp, &succ)
                .into_iter()
                .map(|i| nodes[i].clone())
                .collect()
        })
        .collect()
}

/// Walks a component along its edges from its smallest member, to print it as `a -> b -> a`.
fn order_cycle(comp: &[usize], succ: &[Vec<usize>]) -> Vec<usize> {
    let start = *comp.iter().min().expect("non-empty component");
    let mut path = vec![start];
    let mut cur = start;
    loop {
        let next = succ[cur]
            .iter()
            .copied()
            .filter(|w| comp.contains(w))
            .find(|w| *w == start || !path.contains(w));
        match next {
            Some(w) if w == start => break,
            Some(w) => {
                path.push(w);
                cur = w;
            }
            None => break,
        }
    }
    path
}

/// `A -> B -> A`, the way a cycle is named in conditions.
pub fn describe_cycle(cycle: &[ObjectRef]) -> String {
    let mut parts: Vec<String> = cycle
        .iter()
        .map(|r| format!("{}/{}", r.namespace, r.name))
        .collect();
    if let Some(first) = parts.first().cloned() {
        parts.push(first);
    }
    parts.join(" -> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str) -> ObjectRef {
        ObjectRef::new(
            "kustomize.toolkit.fluxcd.io",
            "Kustomization",
            "flux-system",
            name,
        )
    }

    #[test]
    fn finds_cycles_and_ignores_dags() {
        let mut edges = HashMap::new();
        edges.insert(r("apps"), vec![r("infra")]);
        edges.insert(r("infra"), vec![r("crds")]);
        edges.insert(r("crds"), vec![]);
        assert!(find_cycles(&edges).is_empty());

        edges.insert(r("crds"), vec![r("apps")]);
        edges.insert(r("alone"), vec![r("alone")]);
        edges.insert(r("leaf"), vec![r("apps")]);
        let mut cycles: Vec<String> = find_cycles(&edges)
            .iter()
            .map(|c| describe_cycle(c))
            .collect();
        cycles.sort();
        assert_eq!(
            cycles,
            [
                "flux-system/alone -> flux-system/alone",
                "flux-system/apps -> flux-system/infra -> flux-system/crds -> flux-system/apps",
            ]
        );
    }

    #[test]
    fn deep_chains_do_not_overflow() {
        let mut edges = HashMap::new();
        for i in 0..100_000 {
            edges.insert(r(&format!("k{i}")), vec![r(&format!("k{}", i + 1))]);
        }
        assert!(find_cycles(&edges).is_empty());
    }
}
