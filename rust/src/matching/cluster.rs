//! Clusters for deduplication: union-find over accepted pairs, and for each
//! cluster its strongest link and its weakest necessary link (the weakest
//! edge of a maximum spanning tree: the one holding the cluster together).

pub struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    pub fn new(n: usize) -> UnionFind {
        UnionFind {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
        }
    }
    pub fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] as usize != x {
            let p = self.parent[x] as usize;
            self.parent[x] = self.parent[p];
            x = p;
        }
        x
    }
    /// Joins the sets of a and b; false when they were already one.
    pub fn union(&mut self, a: usize, b: usize) -> bool {
        let (mut ra, mut rb) = (self.find(a), self.find(b));
        if ra == rb {
            return false;
        }
        if self.size[ra] < self.size[rb] {
            std::mem::swap(&mut ra, &mut rb);
        }
        self.parent[rb] = ra as u32;
        self.size[ra] += self.size[rb];
        true
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub members: Vec<u32>,
    /// indices into the pair list
    pub strongest: usize,
    pub weakest: usize,
}

/// Clusters (of two or more records) from pairs `(i, j, weight)`, keeping
/// only pairs with `accept(k)`. Sorted by size, then first member.
pub fn clusters(
    n: usize,
    pairs: &[(u32, u32, f64)],
    accept: impl Fn(usize) -> bool,
) -> Vec<Cluster> {
    let mut order: Vec<usize> = (0..pairs.len()).filter(|&k| accept(k)).collect();
    order.sort_by(|a, b| pairs[*b].2.total_cmp(&pairs[*a].2));
    let mut uf = UnionFind::new(n);
    let mut weakest_tree = vec![usize::MAX; n];
    let mut strongest = vec![usize::MAX; n];
    for &k in &order {
        let (i, j, _) = pairs[k];
        let (ri, rj) = (uf.find(i as usize), uf.find(j as usize));
        let s = [strongest[ri], strongest[rj]]
            .into_iter()
            .filter(|x| *x != usize::MAX)
            .min_by(|a, b| pairs[*b].2.total_cmp(&pairs[*a].2));
        if uf.union(i as usize, j as usize) {
            let r = uf.find(i as usize);
            // edges arrive strongest first, so a joining edge is the weakest so far
            weakest_tree[r] = k;
            strongest[r] = s.unwrap_or(k);
        }
    }
    // (root, member) of every record an accepted pair touches, grouped by root
    let mut member_of: Vec<(u32, u32)> = Vec::with_capacity(2 * order.len());
    for &k in &order {
        let (i, j, _) = pairs[k];
        for x in [i, j] {
            member_of.push((uf.find(x as usize) as u32, x));
        }
    }
    member_of.sort_unstable();
    member_of.dedup();
    let mut out: Vec<Cluster> = member_of
        .chunk_by(|a, b| a.0 == b.0)
        .map(|group| {
            let r = group[0].0 as usize;
            Cluster {
                members: group.iter().map(|g| g.1).collect(),
                strongest: strongest[r],
                weakest: weakest_tree[r],
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.members
            .len()
            .cmp(&a.members.len())
            .then(a.members[0].cmp(&b.members[0]))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_find_joins() {
        let mut uf = UnionFind::new(5);
        assert!(uf.union(0, 1));
        assert!(uf.union(1, 2));
        assert!(!uf.union(0, 2));
        assert_eq!(uf.find(2), uf.find(0));
        assert_ne!(uf.find(3), uf.find(0));
    }

    #[test]
    fn clusters_with_links() {
        let pairs = vec![
            (0, 1, 10.0),
            (1, 2, 3.0),
            (0, 2, 8.0),
            (3, 4, 5.0),
            (5, 6, -1.0),
        ];
        let cs = clusters(7, &pairs, |k| pairs[k].2 > 0.0);
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].members, vec![0, 1, 2]);
        assert_eq!(cs[0].strongest, 0);
        // (1,2) at 3.0 is redundant: 0-1 and 0-2 hold the cluster, 0-2 weakest
        assert_eq!(cs[0].weakest, 2);
        assert_eq!(cs[1].members, vec![3, 4]);
        assert_eq!(cs[1].strongest, 3);
        assert_eq!(cs[1].weakest, 3);
    }
}
