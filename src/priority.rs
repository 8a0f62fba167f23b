//! Lowering the calling thread's CPU priority, for work that must not take a core from
//! the request path while it has work: the store's compaction and the expensive queries.
//! On Linux a thread's niceness and scheduling class are its own, and lowering either
//! needs no privilege (raising it back does); elsewhere these change nothing.

/// The system refused to change the calling thread's priority (the system's reason).
#[derive(Debug, thiserror::Error)]
pub enum PriorityError {
    #[cfg(target_os = "linux")]
    #[error(transparent)]
    Niceness(rustix::io::Errno),
    #[cfg(target_os = "linux")]
    #[error(transparent)]
    SchedulingClass(thread_priority::Error),
}

/// Raises the calling thread's niceness by `steps` (the kernel stops at 19, the lowest).
pub fn lower_niceness_by(steps: i32) -> Result<(), PriorityError> {
    #[cfg(target_os = "linux")]
    {
        let me = Some(rustix::thread::gettid());
        let now = rustix::process::getpriority_process(me).map_err(PriorityError::Niceness)?;
        rustix::process::setpriority_process(me, now.saturating_add(steps).min(19))
            .map_err(PriorityError::Niceness)?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = steps;
    Ok(())
}

/// Puts the calling thread in the idle scheduling class (`SCHED_IDLE`): any thread of
/// the ordinary class that wakes takes the core from it at once.
pub fn enter_idle_class() -> Result<(), PriorityError> {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
        thread_priority::set_thread_priority_and_policy(
            thread_priority::thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        )
        .map_err(PriorityError::SchedulingClass)?;
    }
    Ok(())
}
