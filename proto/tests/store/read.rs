//! Reads: the list cursor is exact under equal creation times.

use std::collections::HashSet;

use proto::TaskId;
use proto::store::{Limits, NewTask};

use crate::support::Scratch;

#[tokio::test]
async fn listing_pages_through_tasks_created_in_the_same_millisecond() {
    // Seven records with one creation time: the cursor must break the tie without
    // skipping or repeating any of them.
    let t = Scratch::new();
    let at = chrono::Utc::now();
    let mut created = HashSet::new();
    for i in 0..7 {
        let task = NewTask { created_at: at, ..NewTask::new("tie", format!("tie {i}"), 1) };
        t.store.submit(&task, &Limits::NONE).await.expect("submit");
        created.insert(task.id);
    }
    for limit in [1, 2, 3, 7, 8] {
        let mut ids: Vec<TaskId> = Vec::new();
        let mut cursor: Option<String> = None;
        for pages in 1.. {
            assert!(pages <= 50, "limit {limit}: paging does not terminate");
            let page = t.store.list("tie", limit, cursor.as_deref()).await.expect("list");
            assert!(page.tasks.len() <= limit, "limit {limit}: a page of {}", page.tasks.len());
            ids.extend(page.tasks.iter().map(|r| r.id));
            match page.next_cursor {
                Some(c) => {
                    assert_eq!(page.tasks.len(), limit, "only a full page may have a next page");
                    cursor = Some(c);
                }
                None => break,
            }
        }
        let unique: HashSet<TaskId> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "limit {limit}: duplicates in {ids:?}");
        assert_eq!(unique, created, "limit {limit}: every task exactly once");
    }
}
