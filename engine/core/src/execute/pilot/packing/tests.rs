use super::*;

/// The pilot backend's dispatch as it was before [`Packer`]: for every waiting task in
/// order, scan every node. The packer must place exactly as it does.
#[derive(Default)]
struct Naive {
    nodes: Vec<(Room, Need, bool)>,
    queue: Vec<(u64, Need, bool)>,
}

impl Naive {
    fn dispatch(&mut self) -> Vec<(u64, usize, Need)> {
        let mut out = vec![];
        let mut i = 0;
        while i < self.queue.len() {
            if !self.nodes.iter().any(|w| w.2) {
                break;
            }
            let (key, qneed, qspread) = self.queue[i];
            let spread = qspread || !self.nodes.iter().any(|w| w.2 && w.0.fits(Need::default(), qneed));
            let need = if spread { Need::default() } else { qneed };
            let best = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, w)| w.2 && w.0.fits(w.1, need))
                .max_by_key(|(_, w)| w.0.cpus.saturating_sub(w.1.cores));
            let Some((w, _)) = best else {
                i += 1;
                continue;
            };
            self.queue.remove(i);
            self.nodes[w].1.add(need);
            out.push((key, w, need));
        }
        out
    }
}

/// SplitMix64: a reproducible stream of numbers for the random scenarios.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn need(cores: u32, memory_mb: u64, gpus: u32) -> Need {
    Need { cores, memory_mb, gpus }
}

#[test]
fn the_packer_places_every_task_where_the_scan_over_every_node_does() {
    for seed in 0..20 {
        let mut rng = Rng(seed);
        let mut p: Packer<u64> = Packer::new();
        let mut n = Naive::default();
        let mut running: Vec<(u64, usize, Need)> = vec![];
        let mut key = 0;
        let needs = [
            need(1, 0, 0),
            need(4, 0, 0),
            need(8, 0, 0),
            need(2, 3000, 0),
            need(1, 0, 1),
            need(16, 0, 0),
            need(3, 500, 0),
        ];
        for step in 0..500 {
            match rng.below(10) {
                // A node joins (sizes and limits vary, as workers on mixed nodes report).
                0 if step < 250 || n.nodes.is_empty() => {
                    let room = Room {
                        cpus: [4, 8, 8, 16][rng.below(4) as usize],
                        memory_mb: [None, Some(4000), Some(16000)][rng.below(3) as usize],
                        gpus: rng.below(3) as u32,
                    };
                    assert_eq!(p.add_node(room), n.nodes.len());
                    n.nodes.push((room, Need::default(), true));
                }
                // A node is lost with what ran there.
                1 if rng.below(8) == 0 && !n.nodes.is_empty() => {
                    let w = rng.below(n.nodes.len() as u64) as usize;
                    p.lose_node(w);
                    n.nodes[w].1 = Need::default();
                    n.nodes[w].2 = false;
                    running.retain(|r| r.1 != w);
                }
                // A task ends.
                2..=4 if !running.is_empty() => {
                    let (_, w, nd) = running.swap_remove(rng.below(running.len() as u64) as usize);
                    p.release(w, nd);
                    n.nodes[w].1.sub(nd);
                }
                // A waiting task is cancelled.
                5 if rng.below(4) == 0 && !n.queue.is_empty() => {
                    let at = rng.below(n.queue.len() as u64) as usize;
                    let (k, _, _) = n.queue.remove(at);
                    assert_eq!(p.remove(k), Some(k));
                    assert!(!p.is_waiting(k));
                }
                // Tasks are submitted.
                _ => {
                    for _ in 0..1 + rng.below(4) {
                        key += 1;
                        let nd = needs[rng.below(needs.len() as u64) as usize];
                        let spread = rng.below(20) == 0;
                        p.push(key, nd, spread, key);
                        n.queue.push((key, nd, spread));
                    }
                }
            }
            let want = n.dispatch();
            let got: Vec<(u64, usize, Need)> = p.dispatch().into_iter().map(|x| (x.key, x.node, x.need)).collect();
            assert_eq!(got, want, "seed {seed}, step {step}");
            running.extend(got);
            assert_eq!(p.waiting(), n.queue.len());
            for (w, node) in n.nodes.iter().enumerate() {
                assert_eq!(p.used(w), node.1, "seed {seed}, step {step}, node {w}");
            }
        }
    }
}

#[test]
fn a_task_as_large_as_a_node_waits_for_a_whole_empty_node_while_small_ones_pass_it() {
    let mut p: Packer<&str> = Packer::new();
    for _ in 0..2 {
        p.add_node(Room { cpus: 64, memory_mb: None, gpus: 0 });
    }
    p.push(1, need(1, 0, 0), false, "one");
    let first = p.dispatch();
    assert_eq!(first.len(), 1);
    p.push(2, need(64, 0, 0), false, "wide");
    p.push(3, need(64, 0, 0), false, "wide2");
    p.push(4, need(4, 0, 0), false, "quad");
    let placed = p.dispatch();
    // The empty node goes to the first wide task; the second waits; the quad task behind it
    // starts next to the single-core one.
    assert_eq!(placed.iter().map(|x| (x.item, x.node)).collect::<Vec<_>>(), [("wide", 0), ("quad", first[0].node)]);
    assert_eq!(p.used(0).cores, 64);
    assert!(p.is_waiting(3));
    // A single-core task submitted now is not held back by the waiting wide one (no
    // reservation), and the wide one starts once a node is empty again.
    p.push(5, need(1, 0, 0), false, "late");
    assert_eq!(p.dispatch().iter().map(|x| x.item).collect::<Vec<_>>(), ["late"]);
    p.release(1, need(1, 0, 0));
    p.release(1, need(4, 0, 0));
    assert!(p.dispatch().is_empty(), "node 1 still runs `late`");
    p.release(1, need(1, 0, 0));
    assert_eq!(p.dispatch().iter().map(|x| (x.item, x.node)).collect::<Vec<_>>(), [("wide2", 1)]);
    assert_eq!(p.waiting(), 0);
}

#[test]
fn a_task_larger_than_every_node_is_spread_and_reserves_nothing() {
    let mut p: Packer<()> = Packer::new();
    p.add_node(Room { cpus: 8, memory_mb: None, gpus: 0 });
    p.add_node(Room { cpus: 8, memory_mb: None, gpus: 0 });
    p.push(1, need(16, 0, 0), false, ());
    p.push(2, need(2, 0, 0), true, ());
    let placed = p.dispatch();
    assert_eq!(placed.iter().map(|x| x.need).collect::<Vec<_>>(), [Need::default(), Need::default()]);
    assert_eq!((p.used(0), p.used(1)), (Need::default(), Need::default()));
    // Without live nodes nothing starts; what waits can be taken out in order.
    p.lose_node(0);
    p.lose_node(1);
    p.push(3, need(1, 0, 0), false, ());
    p.push(4, need(2, 0, 0), false, ());
    assert!(p.dispatch().is_empty());
    assert_eq!(p.drain().into_iter().map(|x| x.0).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(p.waiting(), 0);
}

#[test]
fn a_task_larger_than_a_node_spans_the_nodes_with_the_most_room_evenly() {
    assert_eq!(span_of(need(64, 0, 0), 1, 64), (need(64, 0, 0), 1));
    assert_eq!(span_of(need(128, 8192, 2), 1, 64), (need(64, 4096, 1), 2));
    assert_eq!(span_of(need(96, 0, 0), 1, 64), (need(48, 0, 0), 2));
    assert_eq!(span_of(need(8, 0, 0), 4, 64), (need(2, 0, 0), 4), "`nodes: 4` asked");
    let mut p: Packer<&str> = Packer::new();
    for _ in 0..3 {
        p.add_node(Room { cpus: 64, memory_mb: None, gpus: 0 });
    }
    p.push(1, need(20, 0, 0), false, "small");
    assert_eq!(p.dispatch()[0].node, 2);
    // 48 cores on each of two nodes: nodes 1 and 0 are empty, node 2 has 44 free.
    p.push_span(2, need(48, 0, 0), 2, "wide");
    let placed = p.dispatch();
    assert_eq!((placed[0].node, placed[0].others.clone(), placed[0].need), (1, vec![0], need(48, 0, 0)));
    assert_eq!((p.used(0).cores, p.used(1).cores, p.used(2).cores), (48, 48, 20));
    // Another needs two nodes with 48 free: only node 2 has (44 < 48: none): it waits, and
    // a small task behind it starts.
    p.push_span(3, need(48, 0, 0), 2, "wide2");
    p.push(4, need(16, 0, 0), false, "after");
    assert_eq!(p.dispatch().iter().map(|x| x.item).collect::<Vec<_>>(), ["after"]);
    for n in [0, 1] {
        p.release(n, need(48, 0, 0));
    }
    let placed = p.dispatch();
    assert_eq!((placed[0].item, placed[0].node, placed[0].others.clone()), ("wide2", 1, vec![0]));
    // Wider than the allocation: it could never start, so it is spread (reserves nothing).
    p.push_span(5, need(10, 0, 0), 4, "huge");
    let placed = p.dispatch();
    assert_eq!((placed[0].item, placed[0].need, placed[0].others.len()), ("huge", Need::default(), 0));
}

#[test]
fn a_task_adopted_from_an_earlier_engine_takes_its_room() {
    let mut p: Packer<&str> = Packer::new();
    p.add_node(Room { cpus: 8, memory_mb: None, gpus: 0 });
    p.add_node(Room { cpus: 8, memory_mb: None, gpus: 0 });
    p.take(1, need(6, 0, 0));
    assert_eq!(p.used(1).cores, 6);
    // The node with the most free cores is node 0 now; a 4-core task fits only there.
    p.push(1, need(4, 0, 0), false, "a");
    p.push(2, need(4, 0, 0), false, "b");
    assert_eq!(p.dispatch().iter().map(|x| (x.item, x.node)).collect::<Vec<_>>(), [("a", 0), ("b", 0)]);
    p.release(1, need(6, 0, 0));
    assert_eq!(p.used(1), Need::default());
    // On a lost node it is only counted (nothing starts there anyway).
    p.lose_node(1);
    p.take(1, need(2, 0, 0));
    p.push(3, need(1, 0, 0), false, "c");
    assert!(p.dispatch().is_empty(), "node 0 is full, node 1 lost");
}
