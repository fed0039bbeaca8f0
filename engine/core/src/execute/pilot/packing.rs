//! Per-node packing of pilot mode, without I/O: which node of the allocation a task starts
//! on, and which waiting tasks start when room frees up. [`super::backend::PilotBackend`]
//! packs its workers' nodes with it, and the scheduler simulation
//! ([`crate::run::sim`]) packs its simulated nodes with the same code, so what the
//! simulation measures is what pilot mode does.
//!
//! ## The rule
//!
//! Waiting tasks are taken in the order they were submitted. A task starts on the live node
//! with the most free cores among those with room for its cores, memory and GPUs next to
//! what already runs there (ties: the node that connected last); a task no node has room
//! for waits, and the tasks behind it may start first (no reservation: a large task can
//! wait while small ones keep filling the cores it needs). A task as large as a node
//! (64 ranks on 64-core nodes) therefore takes a whole, empty node.
//!
//! Tasks larger than a node, two rules:
//! - *spanning* ([`Packer::push_span`]): the task is laid over `width` nodes with an even
//!   share on each ([`span_of`]: 128 ranks on 64-core nodes take two whole nodes, 96 ranks
//!   48 cores on each of two) and starts when that many live nodes have room for the share,
//!   on those with the most free cores. The pilot backend does this for a multi-rank step
//!   asking for several nodes or larger than its largest node, when that many workers are
//!   connected, and tells the launcher which nodes (`srun --nodelist`, `mpiexec -hosts`);
//!   the simulation ([`crate::run::sim`]) uses the same rule;
//! - *spread* ([`Packer::push`] with `spread`: a one-rank task larger than any node, or a
//!   step wider than the connected workers): the worker of the node with the most free
//!   cores starts it with `srun --exact` (SLURM places its ranks in the allocation) or
//!   `mpiexec` over the workers' nodes, and nothing is reserved on them.

//! ## Cost
//!
//! The obvious implementation (for every waiting task, scan every node) costs
//! O(waiting × nodes) each time a task ends, which at 1,000 nodes and a thousand waiting
//! tasks is 10⁶ steps per finished task. [`Packer`] gives the same placements in the same
//! order (the tests check it against that implementation) at O(log nodes) per start:
//! - live nodes are kept ordered by free cores, so the node with the most free cores that
//!   has room is found from the top, and the search stops at the first node with fewer free
//!   cores than the task needs;
//! - waiting tasks are queued by *class* (the same need): when the first task of a class
//!   does not fit, none behind it does in the same pass (room only shrinks while tasks
//!   start), so one pass looks at one task per class, plus the ones it starts.

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::execute::JobRequest;
use crate::model::Resources;

/// What a task takes of its node while it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Need {
    /// Cores (ranks × threads, at least 1).
    pub cores: u32,
    /// Memory in MiB (0: not said).
    pub memory_mb: u64,
    /// GPUs.
    pub gpus: u32,
}

impl Need {
    /// What a job takes.
    pub fn of(job: &JobRequest) -> Self {
        Self::of_resources(&job.resources)
    }

    /// What a task with resources `r` takes.
    pub fn of_resources(r: &Resources) -> Self {
        Need { cores: r.cores().max(1), memory_mb: r.memory.div_ceil(1 << 20), gpus: r.gpus }
    }

    /// Adds `o`.
    pub fn add(&mut self, o: Need) {
        self.cores += o.cores;
        self.memory_mb += o.memory_mb;
        self.gpus += o.gpus;
    }

    /// Takes `o` away.
    pub fn sub(&mut self, o: Need) {
        self.cores = self.cores.saturating_sub(o.cores);
        self.memory_mb = self.memory_mb.saturating_sub(o.memory_mb);
        self.gpus = self.gpus.saturating_sub(o.gpus);
    }
}

/// What a node offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Room {
    /// Cores.
    pub cpus: u32,
    /// Memory in MiB, when known (SLURM's `SLURM_MEM_PER_NODE`).
    pub memory_mb: Option<u64>,
    /// GPUs.
    pub gpus: u32,
}

impl Room {
    /// Whether `n` fits next to what runs on the node (`used`; zero: on the empty node).
    pub fn fits(&self, used: Need, n: Need) -> bool {
        used.cores + n.cores <= self.cpus
            && self.memory_mb.is_none_or(|m| used.memory_mb + n.memory_mb <= m)
            && (n.gpus == 0 || used.gpus + n.gpus <= self.gpus)
    }
}

/// How a task of `cores` cores (`need` in all) asking for `nodes` nodes is laid over nodes
/// of `cpus` cores: on `width` nodes, `share` on each. A task that fits one node (and does
/// not ask for more) takes one; otherwise `width` is the larger of `nodes` and the fewest
/// nodes that hold its cores, and its cores, memory and GPUs are split evenly, rounded up
/// (as `srun --nodes=W --ntasks=R` lays ranks out in blocks). A 64-rank task on 64-core
/// nodes takes one whole node; a 128-rank one two whole nodes; a 96-rank one 48 cores on
/// each of two nodes.
pub fn span_of(need: Need, nodes: u32, cpus: u32) -> (Need, u32) {
    let width = nodes.max(need.cores.div_ceil(cpus.max(1))).max(1);
    let share = Need {
        cores: need.cores.div_ceil(width),
        memory_mb: need.memory_mb.div_ceil(u64::from(width)),
        gpus: need.gpus.div_ceil(width),
    };
    (share, width)
}

/// A task that starts: on which node, taking what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed<T> {
    /// The key it was queued with.
    pub key: u64,
    /// The node (its index, in the order nodes were added); for a task spanning nodes, the
    /// first of them (its launcher runs there).
    pub node: usize,
    /// The other nodes of a task spanning nodes ([`Packer::push_span`]).
    pub others: Vec<usize>,
    /// What it takes on each of its nodes (nothing for a spread task).
    pub need: Need,
    /// What was queued.
    pub item: T,
}

/// One node.
#[derive(Debug, Clone, Copy)]
struct Slot {
    room: Room,
    used: Need,
    alive: bool,
}

impl Slot {
    fn free(&self) -> u32 {
        self.room.cpus.saturating_sub(self.used.cores)
    }
}

/// Waiting tasks of one need, in submission order.
#[derive(Debug)]
struct Class<T> {
    need: Need,
    spread: bool,
    /// Nodes it needs, `need` on each (1: one node).
    width: u32,
    /// (submission number, key, item).
    queue: VecDeque<(u64, u64, T)>,
    /// Whether some live node could hold the need when empty, for the node set of this
    /// version (see [`Packer::version`]).
    fits_empty: Option<(u64, bool)>,
}

/// Nodes, what runs on each, and the tasks waiting for room (see the module docs).
#[derive(Debug)]
pub struct Packer<T> {
    nodes: Vec<Slot>,
    /// Live nodes by (free cores, index).
    by_free: BTreeSet<(u32, usize)>,
    alive: usize,
    classes: Vec<Class<T>>,
    class_of: HashMap<(Need, bool, u32), usize>,
    /// Waiting tasks: key → class.
    waiting: HashMap<u64, usize>,
    seq: u64,
    /// Changes when nodes come or go.
    version: u64,
}

impl<T> Default for Packer<T> {
    fn default() -> Self {
        Packer {
            nodes: vec![],
            by_free: BTreeSet::new(),
            alive: 0,
            classes: vec![],
            class_of: HashMap::new(),
            waiting: HashMap::new(),
            seq: 0,
            version: 0,
        }
    }
}

impl<T> Packer<T> {
    /// No nodes, nothing waiting.
    pub fn new() -> Self {
        Self::default()
    }

    /// A node joins, empty; returns its index (0, 1, ... in the order of the calls).
    pub fn add_node(&mut self, room: Room) -> usize {
        let i = self.nodes.len();
        self.nodes.push(Slot { room, used: Need::default(), alive: true });
        self.by_free.insert((room.cpus, i));
        self.alive += 1;
        self.version += 1;
        i
    }

    /// Node `node` is lost: what ran there is forgotten (the caller fails those tasks).
    pub fn lose_node(&mut self, node: usize) {
        let Some(s) = self.nodes.get_mut(node) else { return };
        if !s.alive {
            return;
        }
        self.by_free.remove(&(s.free(), node));
        s.alive = false;
        s.used = Need::default();
        self.alive -= 1;
        self.version += 1;
    }

    /// Live nodes.
    pub fn alive(&self) -> usize {
        self.alive
    }

    /// What runs on `node` takes.
    pub fn used(&self, node: usize) -> Need {
        self.nodes.get(node).map_or_else(Need::default, |s| s.used)
    }

    /// What `node` offers.
    pub fn room(&self, node: usize) -> Option<Room> {
        self.nodes.get(node).map(|s| s.room)
    }

    /// Queues a task that takes `need` (`spread`: it spans nodes), under `key` (unique
    /// among waiting tasks). It starts at a later [`Packer::dispatch`].
    pub fn push(&mut self, key: u64, need: Need, spread: bool, item: T) {
        self.queue(key, need, spread, 1, item);
    }

    /// Queues a task that spans `width` nodes and takes `share` on each (see
    /// [`span_of`]), under `key`. It starts when `width` live nodes have room for `share`:
    /// those with the most free cores.
    pub fn push_span(&mut self, key: u64, share: Need, width: u32, item: T) {
        self.queue(key, share, false, width.max(1), item);
    }

    fn queue(&mut self, key: u64, need: Need, spread: bool, width: u32, item: T) {
        let c = *self.class_of.entry((need, spread, width)).or_insert_with(|| {
            self.classes.push(Class { need, spread, width, queue: VecDeque::new(), fits_empty: None });
            self.classes.len() - 1
        });
        self.seq += 1;
        self.classes[c].queue.push_back((self.seq, key, item));
        self.waiting.insert(key, c);
    }

    /// Whether the task of `key` waits for room.
    pub fn is_waiting(&self, key: u64) -> bool {
        self.waiting.contains_key(&key)
    }

    /// Tasks waiting for room.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Takes the waiting task of `key` out of the queue (it was cancelled).
    pub fn remove(&mut self, key: u64) -> Option<T> {
        let c = self.waiting.remove(&key)?;
        let q = &mut self.classes[c].queue;
        let at = q.iter().position(|e| e.1 == key)?;
        q.remove(at).map(|e| e.2)
    }

    /// Takes every waiting task out of the queue, in submission order.
    pub fn drain(&mut self) -> Vec<(u64, T)> {
        let mut all: Vec<(u64, u64, T)> = self.classes.iter_mut().flat_map(|c| c.queue.drain(..)).collect();
        all.sort_unstable_by_key(|e| e.0);
        self.waiting.clear();
        all.into_iter().map(|(_, k, t)| (k, t)).collect()
    }

    /// A task on `node` that took `need` ended: its room is free again.
    pub fn release(&mut self, node: usize, need: Need) {
        let Some(s) = self.nodes.get_mut(node) else { return };
        if s.alive {
            self.by_free.remove(&(s.free(), node));
        }
        s.used.sub(need);
        if s.alive {
            self.by_free.insert((s.free(), node));
        }
    }

    /// A task placed otherwise (adopted from an earlier engine) takes `need` on `node`,
    /// whether or not it fits.
    pub fn take(&mut self, node: usize, need: Need) {
        if self.nodes.get(node).is_some_and(|s| s.alive) {
            self.reserve(node, need);
        } else if let Some(s) = self.nodes.get_mut(node) {
            s.used.add(need);
        }
    }

    fn reserve(&mut self, node: usize, need: Need) {
        let s = &mut self.nodes[node];
        self.by_free.remove(&(s.free(), node));
        s.used.add(need);
        self.by_free.insert((s.free(), node));
    }

    /// The live node with the most free cores (the last added among equals) with room for
    /// `need`.
    fn best(&self, need: Need) -> Option<usize> {
        for &(free, i) in self.by_free.iter().rev() {
            if free < need.cores {
                return None; // neither this node nor any after it has the cores
            }
            let s = &self.nodes[i];
            if s.room.fits(s.used, need) {
                return Some(i);
            }
        }
        None
    }

    /// The `width` live nodes with the most free cores (the last added among equals) with
    /// room for `need`, best first; empty when fewer have room.
    fn best_n(&self, need: Need, width: u32) -> Vec<usize> {
        let mut out = Vec::with_capacity(width as usize);
        for &(free, i) in self.by_free.iter().rev() {
            if free < need.cores {
                break;
            }
            let s = &self.nodes[i];
            if s.room.fits(s.used, need) {
                out.push(i);
                if out.len() == width as usize {
                    return out;
                }
            }
        }
        vec![]
    }

    /// Whether enough live nodes could hold class `c`'s need when empty.
    fn fits_some_node(&mut self, c: usize) -> bool {
        let version = self.version;
        if let Some((v, fits)) = self.classes[c].fits_empty
            && v == version
        {
            return fits;
        }
        let (need, width) = (self.classes[c].need, self.classes[c].width as usize);
        let fits =
            self.nodes.iter().filter(|s| s.alive && s.room.fits(Need::default(), need)).take(width).count() == width;
        self.classes[c].fits_empty = Some((version, fits));
        fits
    }

    /// Starts every waiting task that has room now, in submission order (tasks behind one
    /// that does not fit may start), and returns them; their room is taken until
    /// [`Packer::release`].
    pub fn dispatch(&mut self) -> Vec<Placed<T>> {
        let mut out = vec![];
        if self.alive == 0 || self.waiting.is_empty() {
            return out;
        }
        let mut open: Vec<usize> = (0..self.classes.len()).filter(|&c| !self.classes[c].queue.is_empty()).collect();
        while let Some((k, c)) = open
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|&(_, c)| self.classes[c].queue.front().map_or(u64::MAX, |e| e.0))
        {
            let spread = self.classes[c].spread || !self.fits_some_node(c);
            let need = if spread { Need::default() } else { self.classes[c].need };
            let width = if spread { 1 } else { self.classes[c].width };
            let nodes = if width == 1 { self.best(need).into_iter().collect() } else { self.best_n(need, width) };
            let Some((&node, others)) = nodes.split_first() else {
                // Nothing of this class fits until something ends.
                open.swap_remove(k);
                continue;
            };
            let Some((_, key, item)) = self.classes[c].queue.pop_front() else {
                open.swap_remove(k);
                continue;
            };
            if self.classes[c].queue.is_empty() {
                open.swap_remove(k);
            }
            self.waiting.remove(&key);
            for &n in &nodes {
                self.reserve(n, need);
            }
            out.push(Placed { key, node, others: others.to_vec(), need, item });
        }
        out
    }
}

#[cfg(test)]
mod tests;
