package demo;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardOpenOption;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.source.util.ratelimit.RateLimiterStrategy;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.connector.datagen.source.GeneratorFunction;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.util.Collector;

/**
 * Fixture job for Warden's end-to-end tests. Compiles against Flink 1.20 and 2.x
 * (only APIs present in both are used).
 *
 * <pre>
 * rate-limited DataGeneratorSource (longs 0,1,2,...)
 *   -> keyBy(x % 8)
 *   -> Counter (keyed ValueState count; fails while the marker file exists;
 *               optional sleep per record)
 *   -> DiscardingSink
 * </pre>
 *
 * Arguments: --name NAME (default clicks), --marker PATH, --slow MS (default 0),
 * --slow-while PATH (sleep --slow MS per record only while PATH exists; default: always),
 * --rate RECORDS_PER_SECOND (default 100), --checkpoint-interval MS (default 1000; 0: checkpointing off),
 * --checkpoint-timeout MS (default: Flink's, 10 min), --tolerable-failed-checkpoints N (default: Flink's, 0; a
 * larger N keeps the job RUNNING while its checkpoints expire, e.g. behind --slow-while back-pressure),
 * --fail MESSAGE (the counter throws RuntimeException(MESSAGE) on every record: a release that fails at start),
 * --count-file PATH (each run appends "start N": the first count it sees, 1 without state, more once restored).
 */
public class Clicks {

    public static void main(String[] args) throws Exception {
        String name = "clicks";
        String marker = "";
        String slowWhile = "";
        String fail = "";
        String countFile = "";
        long slowMs = 0;
        double rate = 100;
        long interval = 1000;
        long timeout = -1;
        int tolerable = -1;
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            String v = i + 1 < args.length ? args[i + 1] : null;
            switch (a) {
                case "--name": name = need(a, v); i++; break;
                case "--marker": marker = need(a, v); i++; break;
                case "--slow": slowMs = Long.parseLong(need(a, v)); i++; break;
                case "--slow-while": slowWhile = need(a, v); i++; break;
                case "--fail": fail = need(a, v); i++; break;
                case "--count-file": countFile = need(a, v); i++; break;
                case "--rate": rate = Double.parseDouble(need(a, v)); i++; break;
                case "--checkpoint-interval": interval = Long.parseLong(need(a, v)); i++; break;
                case "--checkpoint-timeout": timeout = Long.parseLong(need(a, v)); i++; break;
                case "--tolerable-failed-checkpoints": tolerable = Integer.parseInt(need(a, v)); i++; break;
                default: throw new IllegalArgumentException("unknown argument: " + a);
            }
        }

        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        if (interval > 0) {
            env.enableCheckpointing(interval);
            if (timeout > 0) {
                env.getCheckpointConfig().setCheckpointTimeout(timeout);
            }
            if (tolerable >= 0) {
                env.getCheckpointConfig().setTolerableCheckpointFailureNumber(tolerable);
            }
        }

        DataGeneratorSource<Long> source =
                new DataGeneratorSource<>(
                        new Identity(), Long.MAX_VALUE, RateLimiterStrategy.perSecond(rate), Types.LONG);

        env.fromSource(source, WatermarkStrategy.noWatermarks(), "clicks-source")
                .uid("clicks-source")
                .keyBy(new ModKey(), Types.LONG)
                .process(new Counter(marker, slowMs, slowWhile, fail, countFile))
                .returns(Types.LONG)
                .uid("clicks-counter")
                .name("clicks-counter")
                .sinkTo(new DiscardingSink<>())
                .uid("clicks-sink")
                .name("clicks-sink");

        env.execute(name);
    }

    private static String need(String flag, String value) {
        if (value == null) {
            throw new IllegalArgumentException(flag + " needs a value");
        }
        return value;
    }

    /** Generator: index -> index. */
    public static class Identity implements GeneratorFunction<Long, Long> {
        @Override
        public Long map(Long index) {
            return index;
        }
    }

    /** Key: x % 8. */
    public static class ModKey implements KeySelector<Long, Long> {
        @Override
        public Long getKey(Long value) {
            return value % 8;
        }
    }

    /**
     * Counts records per key in keyed state; fails while the marker file exists; sleeps per record (while the
     * slow-while file exists, if one is given).
     */
    public static class Counter extends KeyedProcessFunction<Long, Long, Long> {
        private final String marker;
        private final long slowMs;
        private final String slowWhile;
        private final String fail;
        private final String countFile;
        private transient boolean started;
        private transient ValueState<Long> count;
        private transient Path markerPath;
        private transient Path slowPath;

        Counter(String marker, long slowMs, String slowWhile, String fail, String countFile) {
            this.marker = marker;
            this.slowMs = slowMs;
            this.slowWhile = slowWhile;
            this.fail = fail;
            this.countFile = countFile;
        }

        @Override
        public void processElement(Long value, Context ctx, Collector<Long> out) throws Exception {
            if (count == null) {
                count = getRuntimeContext().getState(new ValueStateDescriptor<>("count", Long.class));
                markerPath = marker.isEmpty() ? null : Paths.get(marker);
                slowPath = slowWhile.isEmpty() ? null : Paths.get(slowWhile);
            }
            if (!fail.isEmpty()) {
                throw new RuntimeException(fail);
            }
            if (markerPath != null && Files.exists(markerPath)) {
                throw new RuntimeException("marker file present: " + marker);
            }
            if (slowMs > 0 && (slowPath == null || Files.exists(slowPath))) {
                Thread.sleep(slowMs);
            }
            Long c = count.value();
            long next = (c == null ? 0L : c) + 1;
            count.update(next);
            if (!started) {
                started = true;
                if (!countFile.isEmpty()) {
                    // The first count this run sees: 1 without state, more once restored.
                    Files.write(Paths.get(countFile), ("start " + next + "\n").getBytes(StandardCharsets.UTF_8),
                            StandardOpenOption.CREATE, StandardOpenOption.APPEND);
                }
            }
            out.collect(next);
        }
    }
}
