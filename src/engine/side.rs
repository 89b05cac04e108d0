//! Which series are on which side of a deploy's comparison: the canary's (the series
//! carrying the deploy's canary labels) and the control's (the others), and a memo of
//! that answer per evaluation, since every read of every rule asks it of every series.

use super::judge::SideFilter;
use super::store::{Series, SeriesId, Store};
use crate::model::CanarySelector;

/// Series on one side of a comparison for one deploy.
pub(super) struct Side<'a> {
    canary: &'a CanarySelector,
    want_canary: bool,
    everything: bool,
    members: &'a CanaryMembers,
}

/// Which series carry a deploy's canary labels, worked out once per series per
/// evaluation: a tick asks it of every series of every rule, on both sides and in every
/// block of a walk, and the answer (label lookups and string compares) was 4 % of a
/// large replay's instructions. Built per evaluation, so no series id changes under it.
pub(super) struct CanaryMembers {
    /// Per series id: 0 not yet asked, 1 canary, 2 not.
    known: Vec<std::cell::Cell<u8>>,
}

impl CanaryMembers {
    pub(super) fn new(store: &Store) -> CanaryMembers {
        CanaryMembers {
            known: vec![std::cell::Cell::new(0); store.len()],
        }
    }

    pub(super) fn is_canary(&self, sel: &CanarySelector, id: SeriesId, s: &Series) -> bool {
        let Some(slot) = self.known.get(id.0 as usize) else {
            return is_canary(sel, s);
        };
        match slot.get() {
            1 => true,
            2 => false,
            _ => {
                let yes = is_canary(sel, s);
                slot.set(if yes { 1 } else { 2 });
                yes
            }
        }
    }
}

pub(super) fn is_canary(sel: &CanarySelector, s: &Series) -> bool {
    sel.iter()
        .any(|(label, values)| values.values().contains(&s.label(label)))
}

impl<'a> Side<'a> {
    /// The deploy's side (canary series, or every series when `everything`) and the
    /// control (the non-canary series).
    pub(super) fn pair(
        canary: &'a CanarySelector,
        everything: bool,
        members: &'a CanaryMembers,
    ) -> (Side<'a>, Side<'a>) {
        (
            Side {
                canary,
                want_canary: true,
                everything,
                members,
            },
            Side {
                canary,
                want_canary: false,
                everything: false,
                members,
            },
        )
    }
}

impl SideFilter for Side<'_> {
    fn includes(&self, id: SeriesId, s: &Series) -> bool {
        self.everything || self.members.is_canary(self.canary, id, s) == self.want_canary
    }
}
