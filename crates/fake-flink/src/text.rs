//! Texts the fake JobManager sends: error messages and Java stack traces shaped like the ones a
//! real Flink 2.3.0 JobManager produces (taken from the captured samples where possible).

/// Body text of the 503 a JobManager sends while no leader is elected.
pub(super) const LEADER_ELECTION: &str =
    "Service temporarily unavailable due to an ongoing leader election. Please refresh.";

/// Stack frames under a `RestHandlerException` raised while a request is parsed.
pub(super) const HANDLER_FRAMES: &str = "\
\tat org.apache.flink.runtime.rest.handler.AbstractHandler.respondAsLeader(AbstractHandler.java:212)\n\
\tat org.apache.flink.runtime.rest.handler.LeaderRetrievalHandler.lambda$channelRead0$0(LeaderRetrievalHandler.java:83)\n\
\tat java.base/java.util.Optional.ifPresent(Optional.java:178)\n\
\tat org.apache.flink.util.OptionalConsumer.ifPresent(OptionalConsumer.java:45)\n\
\tat org.apache.flink.runtime.rest.handler.LeaderRetrievalHandler.channelRead0(LeaderRetrievalHandler.java:80)\n\
\tat org.apache.flink.runtime.rest.handler.LeaderRetrievalHandler.channelRead0(LeaderRetrievalHandler.java:49)\n\
\tat org.apache.flink.shaded.netty4.io.netty.channel.SimpleChannelInboundHandler.channelRead(SimpleChannelInboundHandler.java:99)\n\
\tat org.apache.flink.shaded.netty4.io.netty.channel.AbstractChannelHandlerContext.invokeChannelRead(AbstractChannelHandlerContext.java:442)\n\
\tat org.apache.flink.runtime.rest.handler.router.RouterHandler.routed(RouterHandler.java:115)\n\
\tat org.apache.flink.runtime.rest.handler.router.RouterHandler.channelRead0(RouterHandler.java:94)\n\
\tat org.apache.flink.runtime.rest.handler.router.RouterHandler.channelRead0(RouterHandler.java:55)\n\
\tat org.apache.flink.shaded.netty4.io.netty.channel.SimpleChannelInboundHandler.channelRead(SimpleChannelInboundHandler.java:99)\n\
\tat org.apache.flink.shaded.netty4.io.netty.channel.nio.NioEventLoop.run(NioEventLoop.java:566)\n\
\tat org.apache.flink.shaded.netty4.io.netty.util.concurrent.SingleThreadEventExecutor$4.run(SingleThreadEventExecutor.java:997)\n\
\tat java.base/java.lang.Thread.run(Thread.java:840)\n";

/// Stack frames under a failed savepoint / checkpoint.
pub(super) const CHECKPOINT_FRAMES: &str = "\
\tat org.apache.flink.runtime.checkpoint.CheckpointCoordinator.abortPendingCheckpoint(CheckpointCoordinator.java:2280)\n\
\tat org.apache.flink.runtime.checkpoint.CheckpointCoordinator.abortPendingCheckpoint(CheckpointCoordinator.java:2267)\n\
\tat org.apache.flink.runtime.checkpoint.CheckpointCoordinator.onTriggerFailure(CheckpointCoordinator.java:1037)\n\
\tat org.apache.flink.runtime.checkpoint.CheckpointCoordinator.lambda$startTriggeringCheckpoint$8(CheckpointCoordinator.java:688)\n\
\tat java.base/java.util.concurrent.CompletableFuture.uniHandle(CompletableFuture.java:934)\n\
\tat java.base/java.util.concurrent.CompletableFuture$UniHandle.tryFire(CompletableFuture.java:911)\n\
\tat java.base/java.util.concurrent.CompletableFuture$Completion.run(CompletableFuture.java:482)\n\
\tat java.base/java.util.concurrent.ThreadPoolExecutor.runWorker(ThreadPoolExecutor.java:1136)\n\
\tat java.base/java.util.concurrent.ThreadPoolExecutor$Worker.run(ThreadPoolExecutor.java:635)\n\
\tat java.base/java.lang.Thread.run(Thread.java:840)\n";

/// Stack frames of `NotFoundException: Job <jid> not found` (Flink 2.3.0).
pub(super) const JOB_NOT_FOUND_FRAMES: &str = "\
\tat org.apache.flink.runtime.rest.handler.job.AbstractExecutionGraphHandler.lambda$handleRequest$1(AbstractExecutionGraphHandler.java:99)\n\
\tat java.base/java.util.concurrent.CompletableFuture.uniExceptionally(CompletableFuture.java:990)\n\
\tat java.base/java.util.concurrent.CompletableFuture$UniExceptionally.tryFire(CompletableFuture.java:974)\n\
\tat java.base/java.util.concurrent.CompletableFuture.postComplete(CompletableFuture.java:510)\n\
\tat java.base/java.util.concurrent.CompletableFuture.completeExceptionally(CompletableFuture.java:2162)\n\
\tat org.apache.flink.runtime.rest.handler.legacy.DefaultExecutionGraphCache.lambda$getExecutionGraphInternal$0(DefaultExecutionGraphCache.java:109)\n\
\tat java.base/java.util.concurrent.CompletableFuture.uniWhenComplete(CompletableFuture.java:863)\n\
\tat java.base/java.util.concurrent.CompletableFuture$UniWhenComplete.tryFire(CompletableFuture.java:841)\n\
\tat java.base/java.util.concurrent.CompletableFuture.postComplete(CompletableFuture.java:510)\n\
\tat java.base/java.util.concurrent.CompletableFuture.completeExceptionally(CompletableFuture.java:2162)\n\
\tat org.apache.flink.runtime.rpc.pekko.PekkoInvocationHandler.lambda$invokeRpc$1(PekkoInvocationHandler.java:261)\n\
\tat java.base/java.util.concurrent.CompletableFuture.uniWhenComplete(CompletableFuture.java:863)\n\
\tat java.base/java.util.concurrent.CompletableFuture$UniWhenComplete.tryFire(CompletableFuture.java:841)\n\
\tat java.base/java.util.concurrent.CompletableFuture.postComplete(CompletableFuture.java:510)\n\
\tat java.base/java.util.concurrent.CompletableFuture.completeExceptionally(CompletableFuture.java:2162)\n\
\tat org.apache.flink.util.concurrent.FutureUtils.doForward(FutureUtils.java:1315)\n\
\tat org.apache.flink.runtime.concurrent.ClassLoadingUtils.lambda$guardCompletionWithContextClassLoader$1(ClassLoadingUtils.java:93)\n\
\tat org.apache.flink.runtime.concurrent.ClassLoadingUtils.runWithContextClassLoader(ClassLoadingUtils.java:68)\n\
\tat org.apache.flink.runtime.concurrent.ClassLoadingUtils.lambda$guardCompletionWithContextClassLoader$2(ClassLoadingUtils.java:92)\n\
\tat java.base/java.util.concurrent.CompletableFuture.uniWhenComplete(CompletableFuture.java:863)\n\
\tat java.base/java.util.concurrent.CompletableFuture$UniWhenComplete.tryFire(CompletableFuture.java:841)\n\
\tat java.base/java.util.concurrent.CompletableFuture.postComplete(CompletableFuture.java:510)\n\
\tat java.base/java.util.concurrent.CompletableFuture.completeExceptionally(CompletableFuture.java:2162)\n\
\tat org.apache.flink.runtime.concurrent.pekko.ScalaFutureUtils$1.onComplete(ScalaFutureUtils.java:45)\n\
\tat org.apache.pekko.dispatch.OnComplete.internal(Future.scala:337)\n\
\tat org.apache.pekko.dispatch.OnComplete.internal(Future.scala:335)\n\
\tat org.apache.pekko.dispatch.japi$CallbackBridge.apply(Future.scala:259)\n\
\tat org.apache.pekko.dispatch.japi$CallbackBridge.apply(Future.scala:256)\n\
\tat scala.concurrent.impl.CallbackRunnable.run(Promise.scala:74)\n\
\tat org.apache.flink.runtime.concurrent.pekko.ScalaFutureUtils$DirectExecutionContext.execute(ScalaFutureUtils.java:65)\n\
\tat scala.concurrent.impl.CallbackRunnable.executeWithValue(Promise.scala:82)\n\
\tat scala.concurrent.impl.Promise$DefaultPromise.$anonfun$tryComplete$1(Promise.scala:298)\n\
\tat scala.concurrent.impl.Promise$DefaultPromise.$anonfun$tryComplete$1$adapted(Promise.scala:298)\n\
\tat scala.concurrent.impl.Promise$DefaultPromise.tryComplete(Promise.scala:298)\n\
\tat org.apache.pekko.pattern.PromiseActorRef.$bang(AskSupport.scala:625)\n\
\tat org.apache.pekko.pattern.PipeToSupport$PipeableFuture$$anonfun$pipeTo$1.applyOrElse(PipeToSupport.scala:34)\n\
\tat scala.concurrent.Future.$anonfun$andThen$1(Future.scala:536)\n\
\tat scala.concurrent.impl.Promise.$anonfun$transform$1(Promise.scala:42)\n\
\tat scala.concurrent.impl.CallbackRunnable.run(Promise.scala:74)\n\
\tat org.apache.pekko.dispatch.BatchingExecutor$AbstractBatch.processBatch(BatchingExecutor.scala:72)\n\
\tat org.apache.pekko.dispatch.BatchingExecutor$BlockableBatch.$anonfun$run$1(BatchingExecutor.scala:109)\n\
\tat scala.runtime.java8.JFunction0$mcV$sp.apply(JFunction0$mcV$sp.java:23)\n\
\tat scala.concurrent.BlockContext$.withBlockContext(BlockContext.scala:85)\n\
\tat org.apache.pekko.dispatch.BatchingExecutor$BlockableBatch.run(BatchingExecutor.scala:109)\n\
\tat org.apache.pekko.dispatch.TaskInvocation.run(AbstractDispatcher.scala:59)\n\
\tat org.apache.pekko.dispatch.ForkJoinExecutorConfigurator$PekkoForkJoinTask.exec(ForkJoinExecutorConfigurator.scala:62)\n\
\tat java.base/java.util.concurrent.ForkJoinTask.doExec(ForkJoinTask.java:373)\n\
\tat java.base/java.util.concurrent.ForkJoinPool$WorkQueue.topLevelExec(ForkJoinPool.java:1182)\n\
\tat java.base/java.util.concurrent.ForkJoinPool.scan(ForkJoinPool.java:1655)\n\
\tat java.base/java.util.concurrent.ForkJoinPool.runWorker(ForkJoinPool.java:1622)\n\
\tat java.base/java.util.concurrent.ForkJoinWorkerThread.run(ForkJoinWorkerThread.java:165)";

/// Stack frames of the `FlinkJobNotFoundException` cause (Flink 2.3.0).
pub(super) const JOB_NOT_FOUND_CAUSE_FRAMES: &str = "\
\tat org.apache.flink.runtime.dispatcher.Dispatcher.requestExecutionGraphInfo(Dispatcher.java:1769)\n\
\tat java.base/jdk.internal.reflect.NativeMethodAccessorImpl.invoke0(Native Method)\n\
\tat java.base/jdk.internal.reflect.NativeMethodAccessorImpl.invoke(NativeMethodAccessorImpl.java:77)\n\
\tat java.base/jdk.internal.reflect.DelegatingMethodAccessorImpl.invoke(DelegatingMethodAccessorImpl.java:43)\n\
\tat java.base/java.lang.reflect.Method.invoke(Method.java:569)\n\
\tat org.apache.flink.runtime.rpc.pekko.PekkoRpcActor.lambda$handleRpcInvocation$1(PekkoRpcActor.java:318)\n\
\tat org.apache.flink.runtime.concurrent.ClassLoadingUtils.runWithContextClassLoader(ClassLoadingUtils.java:83)\n\
\tat org.apache.flink.runtime.rpc.pekko.PekkoRpcActor.handleRpcInvocation(PekkoRpcActor.java:316)\n\
\tat org.apache.flink.runtime.rpc.pekko.PekkoRpcActor.handleRpcMessage(PekkoRpcActor.java:229)\n\
\tat org.apache.flink.runtime.rpc.pekko.FencedPekkoRpcActor.handleRpcMessage(FencedPekkoRpcActor.java:88)\n\
\tat org.apache.flink.runtime.rpc.pekko.PekkoRpcActor.handleMessage(PekkoRpcActor.java:174)\n\
\tat org.apache.pekko.japi.pf.UnitCaseStatement.apply(CaseStatements.scala:37)\n\
\tat org.apache.pekko.japi.pf.UnitCaseStatement.apply(CaseStatements.scala:33)\n\
\tat scala.PartialFunction.applyOrElse(PartialFunction.scala:127)\n\
\tat scala.PartialFunction.applyOrElse$(PartialFunction.scala:126)\n\
\tat org.apache.pekko.japi.pf.UnitCaseStatement.applyOrElse(CaseStatements.scala:33)\n\
\tat scala.PartialFunction$OrElse.applyOrElse(PartialFunction.scala:175)\n\
\tat scala.PartialFunction$OrElse.applyOrElse(PartialFunction.scala:176)\n\
\tat scala.PartialFunction$OrElse.applyOrElse(PartialFunction.scala:176)\n\
\tat org.apache.pekko.actor.Actor.aroundReceive(Actor.scala:547)\n\
\tat org.apache.pekko.actor.Actor.aroundReceive$(Actor.scala:545)\n\
\tat org.apache.pekko.actor.AbstractActor.aroundReceive(AbstractActor.scala:229)\n\
\tat org.apache.pekko.actor.ActorCell.receiveMessage(ActorCell.scala:590)\n\
\tat org.apache.pekko.actor.ActorCell.invoke(ActorCell.scala:557)\n\
\tat org.apache.pekko.dispatch.Mailbox.processMailbox(Mailbox.scala:273)\n\
\tat org.apache.pekko.dispatch.Mailbox.run(Mailbox.scala:234)\n\
\tat org.apache.pekko.dispatch.Mailbox.exec(Mailbox.scala:246)\n\
\t... 5 more";

/// Stack frames of `JobException: Recovery is suppressed by NoRestartBackoffTimeStrategy`.
pub(super) const NO_RESTART_FRAMES: &str = "\
\tat org.apache.flink.runtime.executiongraph.failover.ExecutionFailureHandler.handleFailure(ExecutionFailureHandler.java:213)\n\
\tat org.apache.flink.runtime.executiongraph.failover.ExecutionFailureHandler.handleFailureAndReport(ExecutionFailureHandler.java:163)\n\
\tat org.apache.flink.runtime.executiongraph.failover.ExecutionFailureHandler.getFailureHandlingResult(ExecutionFailureHandler.java:118)\n\
\tat org.apache.flink.runtime.scheduler.DefaultScheduler.recordTaskFailure(DefaultScheduler.java:300)\n\
\tat org.apache.flink.runtime.scheduler.DefaultScheduler.handleTaskFailure(DefaultScheduler.java:291)\n\
\tat org.apache.flink.runtime.scheduler.DefaultScheduler.onTaskFailed(DefaultScheduler.java:284)\n\
\tat org.apache.flink.runtime.scheduler.SchedulerBase.onTaskExecutionStateUpdate(SchedulerBase.java:836)\n\
\tat org.apache.flink.runtime.scheduler.SchedulerBase.updateTaskExecutionState(SchedulerBase.java:813)\n\
\tat org.apache.flink.runtime.scheduler.SchedulerNG.updateTaskExecutionState(SchedulerNG.java:90)\n\
\tat org.apache.flink.runtime.jobmaster.JobMaster.updateTaskExecutionState(JobMaster.java:543)\n\
\tat jdk.internal.reflect.GeneratedMethodAccessor15.invoke(Unknown Source)\n\
\tat java.base/jdk.internal.reflect.DelegatingMethodAccessorImpl.invoke(DelegatingMethodAccessorImpl.java:43)\n\
\tat java.base/java.lang.reflect.Method.invoke(Method.java:569)\n\
\tat org.apache.flink.runtime.rpc.pekko.PekkoRpcActor.lambda$handleRpcInvocation$1(PekkoRpcActor.java:318)\n\
\tat org.apache.flink.runtime.concurrent.ClassLoadingUtils.runWithContextClassLoader(ClassLoadingUtils.java:83)\n\
\tat org.apache.flink.runtime.rpc.pekko.PekkoRpcActor.handleRpcInvocation(PekkoRpcActor.java:316)\n\
\tat org.apache.flink.runtime.rpc.pekko.PekkoRpcActor.handleRpcMessage(PekkoRpcActor.java:229)\n\
\tat org.apache.flink.runtime.rpc.pekko.FencedPekkoRpcActor.handleRpcMessage(FencedPekkoRpcActor.java:88)\n\
\tat org.apache.flink.runtime.rpc.pekko.PekkoRpcActor.handleMessage(PekkoRpcActor.java:174)\n\
\tat org.apache.pekko.japi.pf.UnitCaseStatement.apply(CaseStatements.scala:37)\n\
\tat org.apache.pekko.japi.pf.UnitCaseStatement.apply(CaseStatements.scala:33)\n\
\tat scala.PartialFunction.applyOrElse(PartialFunction.scala:127)\n\
\tat scala.PartialFunction.applyOrElse$(PartialFunction.scala:126)\n\
\tat org.apache.pekko.japi.pf.UnitCaseStatement.applyOrElse(CaseStatements.scala:33)\n\
\tat scala.PartialFunction$OrElse.applyOrElse(PartialFunction.scala:175)\n\
\tat scala.PartialFunction$OrElse.applyOrElse(PartialFunction.scala:176)\n\
\tat scala.PartialFunction$OrElse.applyOrElse(PartialFunction.scala:176)\n\
\tat org.apache.pekko.actor.Actor.aroundReceive(Actor.scala:547)\n\
\tat org.apache.pekko.actor.Actor.aroundReceive$(Actor.scala:545)\n\
\tat org.apache.pekko.actor.AbstractActor.aroundReceive(AbstractActor.scala:229)\n\
\tat org.apache.pekko.actor.ActorCell.receiveMessage(ActorCell.scala:590)\n\
\tat org.apache.pekko.actor.ActorCell.invoke(ActorCell.scala:557)\n\
\tat org.apache.pekko.dispatch.Mailbox.processMailbox(Mailbox.scala:273)\n\
\tat org.apache.pekko.dispatch.Mailbox.run(Mailbox.scala:234)\n\
\tat org.apache.pekko.dispatch.Mailbox.exec(Mailbox.scala:246)\n\
\tat java.base/java.util.concurrent.ForkJoinTask.doExec(ForkJoinTask.java:373)\n\
\tat java.base/java.util.concurrent.ForkJoinPool$WorkQueue.topLevelExec(ForkJoinPool.java:1182)\n\
\tat java.base/java.util.concurrent.ForkJoinPool.scan(ForkJoinPool.java:1655)\n\
\tat java.base/java.util.concurrent.ForkJoinPool.runWorker(ForkJoinPool.java:1622)\n\
\tat java.base/java.util.concurrent.ForkJoinWorkerThread.run(ForkJoinWorkerThread.java:165)";

/// Stack frames of a user exception thrown inside a running task.
pub(super) const TASK_FRAMES: &str = "\
\tat demo.Clicks$1.map(Clicks.java:28)\n\
\tat demo.Clicks$1.map(Clicks.java:22)\n\
\tat org.apache.flink.streaming.api.operators.StreamMap.processElement(StreamMap.java:37)\n\
\tat org.apache.flink.streaming.runtime.io.RecordProcessorUtils.lambda$getRecordProcessor$0(RecordProcessorUtils.java:64)\n\
\tat org.apache.flink.streaming.runtime.tasks.OneInputStreamTask$StreamTaskNetworkOutput.emitRecord(OneInputStreamTask.java:251)\n\
\tat org.apache.flink.streaming.runtime.io.AbstractStreamTaskNetworkInput.processElement(AbstractStreamTaskNetworkInput.java:213)\n\
\tat org.apache.flink.streaming.runtime.io.AbstractStreamTaskNetworkInput.emitNext(AbstractStreamTaskNetworkInput.java:170)\n\
\tat org.apache.flink.streaming.runtime.io.StreamOneInputProcessor.processInput(StreamOneInputProcessor.java:65)\n\
\tat org.apache.flink.streaming.runtime.tasks.StreamTask.processInput(StreamTask.java:656)\n\
\tat org.apache.flink.streaming.runtime.tasks.mailbox.MailboxProcessor.runMailboxLoop(MailboxProcessor.java:231)\n\
\tat org.apache.flink.streaming.runtime.tasks.StreamTask.runMailboxLoop(StreamTask.java:1022)\n\
\tat org.apache.flink.streaming.runtime.tasks.StreamTask.invoke(StreamTask.java:959)\n\
\tat org.apache.flink.runtime.taskmanager.Task.runWithSystemExitMonitoring(Task.java:987)\n\
\tat org.apache.flink.runtime.taskmanager.Task.restoreAndInvoke(Task.java:969)\n\
\tat org.apache.flink.runtime.taskmanager.Task.doRun(Task.java:774)\n\
\tat org.apache.flink.runtime.taskmanager.Task.run(Task.java:579)\n\
\tat java.base/java.lang.Thread.run(Thread.java:840)";

/// `errors[0]` of the 404 for an unknown job id (a stringified `NotFoundException`, as 2.3.0 sends).
pub(super) fn job_not_found(jid: &str) -> String {
    format!(
        "org.apache.flink.runtime.rest.NotFoundException: Job {jid} not found\n{JOB_NOT_FOUND_FRAMES}\n\
         Caused by: org.apache.flink.runtime.messages.FlinkJobNotFoundException: \
         Could not find Flink job ({jid})\n{JOB_NOT_FOUND_CAUSE_FRAMES}\n"
    )
}

/// A stringified `NotFoundException` with `message` (what Flink puts in `errors[0]`).
pub(super) fn not_found_exception(message: &str) -> String {
    format!("org.apache.flink.runtime.rest.NotFoundException: {message}\n{HANDLER_FRAMES}")
}

/// A stringified `RestHandlerException` with `message` and an optional `Caused by:` line.
pub(super) fn rest_handler_exception(message: &str, cause: Option<&str>) -> String {
    let mut s = format!("org.apache.flink.runtime.rest.handler.RestHandlerException: {message}\n{HANDLER_FRAMES}");
    if let Some(cause) = cause {
        s.push_str("Caused by: ");
        s.push_str(cause);
        s.push_str("\n\t... 15 more\n");
    }
    s
}

/// Stack trace of a user exception `class: message` thrown inside a task.
pub(super) fn task_trace(class: &str, message: &str) -> String {
    format!("{class}: {message}\n{TASK_FRAMES}\n")
}

/// Stack trace of the global failure Flink reports when restarts are not allowed.
pub(super) fn no_restart_trace(class: &str, message: &str) -> String {
    format!(
        "org.apache.flink.runtime.JobException: Recovery is suppressed by NoRestartBackoffTimeStrategy\n\
         {NO_RESTART_FRAMES}\nCaused by: {class}: {message}\n{TASK_FRAMES}\n"
    )
}

/// Stack trace of a failed checkpoint / savepoint with `message`.
pub(super) fn checkpoint_trace(message: &str) -> String {
    format!("org.apache.flink.runtime.checkpoint.CheckpointException: {message}\n{CHECKPOINT_FRAMES}")
}

/// Standard base64 (with padding) of `data`; used for `serialized-throwable`.
pub(super) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
