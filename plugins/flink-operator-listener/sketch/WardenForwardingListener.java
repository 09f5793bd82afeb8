// SKETCH — NOT BUILT, NOT TESTED BY WARDEN'S CI. A starting point for a Flink Kubernetes Operator listener plugin
// that forwards status updates and events to Warden's `POST /api/events`. Build it against the operator version you
// run (flink-kubernetes-operator-api), check the interfaces' exact signatures there, and review it before use.
//
// Install: package as a jar with a `META-INF/services/org.apache.flink.kubernetes.operator.api.listener.
// FlinkResourceListener` file naming this class, put it under `$FLINK_PLUGINS_DIR/warden-listener/` of the operator
// image, and give the operator (in its flink-conf / config map):
//   kubernetes.operator.plugins.listeners.warden.class: dev.warden.WardenForwardingListener
//   kubernetes.operator.plugins.listeners.warden.url: http://warden.monitoring:9464/api/events
//   kubernetes.operator.plugins.listeners.warden.token-file: /var/run/secrets/warden/token
//   kubernetes.operator.plugins.listeners.warden.target: prod-jm      (optional: a target name in warden.yaml)
package dev.warden;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.kubernetes.operator.api.AbstractFlinkResource;
import org.apache.flink.kubernetes.operator.api.listener.FlinkResourceListener;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;

public class WardenForwardingListener implements FlinkResourceListener {
    private static final ObjectMapper JSON = new ObjectMapper();
    private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
    private URI url;
    private Path tokenFile;
    private String target;

    @Override
    public void configure(Configuration config) {
        // The operator passes the keys under `kubernetes.operator.plugins.listeners.warden.` without that prefix.
        url = URI.create(config.getString("url", "http://127.0.0.1:9464/api/events"));
        tokenFile = Path.of(config.getString("token-file", "/var/run/secrets/warden/token"));
        target = config.getString("target", null);
    }

    @Override
    public void onDeploymentStatusUpdate(StatusUpdateContext<FlinkDeployment, FlinkDeploymentStatus> ctx) {
        statusUpdate("deployment-status", ctx.getFlinkResource(), ctx.getPreviousStatus(), ctx.getNewStatus(), ctx.getTimestamp());
    }

    @Override
    public void onSessionJobStatusUpdate(StatusUpdateContext<FlinkSessionJob, FlinkSessionJobStatus> ctx) {
        statusUpdate("session-job-status", ctx.getFlinkResource(), ctx.getPreviousStatus(), ctx.getNewStatus(), ctx.getTimestamp());
    }

    @Override
    public void onDeploymentEvent(ResourceEventContext<FlinkDeployment> ctx) {
        resourceEvent("deployment-event", ctx);
    }

    @Override
    public void onSessionJobEvent(ResourceEventContext<FlinkSessionJob> ctx) {
        resourceEvent("session-job-event", ctx);
    }

    private void statusUpdate(String kind, AbstractFlinkResource<?, ?> r, Object previous, Object status, java.time.Instant at) {
        ObjectNode data = base(r);
        data.set("previous", JSON.valueToTree(previous));
        data.set("status", JSON.valueToTree(status));
        // The id makes a retry safe: Warden takes the same source + id once within its dedup window.
        send(kind, r, r.getMetadata().getUid() + "/" + r.getMetadata().getResourceVersion() + "/" + kind, at, data);
    }

    private void resourceEvent(String kind, ResourceEventContext<? extends AbstractFlinkResource<?, ?>> ctx) {
        AbstractFlinkResource<?, ?> r = ctx.getFlinkResource();
        var ev = ctx.getEvent(); // a Kubernetes Event: reason (JobException, SavepointError, …), message, type
        ObjectNode data = base(r);
        data.put("reason", ev.getReason());
        data.put("message", ev.getMessage());
        data.put("type", ev.getType());
        send(kind, r, ev.getMetadata().getUid() + "/" + ev.getCount(), ctx.getTimestamp(), data);
    }

    private ObjectNode base(AbstractFlinkResource<?, ?> r) {
        ObjectNode data = JSON.createObjectNode();
        data.put("namespace", r.getMetadata().getNamespace());
        data.put("name", r.getMetadata().getName());
        return data;
    }

    private void send(String kind, AbstractFlinkResource<?, ?> r, String id, java.time.Instant at, ObjectNode data) {
        try {
            ObjectNode event = JSON.createObjectNode();
            event.put("id", id);
            event.put("source", "flink-operator");
            event.put("kind", kind);
            if (target != null) event.put("target", target);
            event.put("subject", r.getMetadata().getNamespace() + "/" + r.getMetadata().getName());
            if (at != null) event.put("time", at.toString());
            event.set("data", data);
            String token = Files.readString(tokenFile).trim(); // re-read: the token may be rotated
            HttpRequest req = HttpRequest.newBuilder(url)
                    .timeout(Duration.ofSeconds(5))
                    .header("Content-Type", "application/json")
                    .header("Authorization", "Bearer " + token)
                    .POST(HttpRequest.BodyPublishers.ofString(JSON.writeValueAsString(event)))
                    .build();
            // Asynchronous: a listener must never hold up the operator's reconcile loop. A failed send is
            // logged and dropped (add a small bounded retry queue if you need more; ids make retries safe).
            http.sendAsync(req, HttpResponse.BodyHandlers.discarding())
                    .thenAccept(resp -> {
                        if (resp.statusCode() >= 300) {
                            System.err.println("warden listener: " + kind + " for " + r.getMetadata().getName() + " answered " + resp.statusCode());
                        }
                    });
        } catch (Exception e) {
            System.err.println("warden listener: cannot send " + kind + ": " + e);
        }
    }
}
