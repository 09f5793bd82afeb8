package demo;

import java.util.Arrays;

/**
 * A broken "next release" for upgrade tests: the job starts (same topology, state restores) and its counter throws
 * on every record, so Flink reports the failure with this root cause.
 */
public class ClicksBroken {
    public static void main(String[] args) throws Exception {
        String[] all = Arrays.copyOf(args, args.length + 2);
        all[args.length] = "--fail";
        all[args.length + 1] = "v2 cannot start: broken release";
        Clicks.main(all);
    }
}
