package demo;

/** The fixture job's "next release" for upgrade tests: the same topology (same operator uids), its own jar. */
public class ClicksV2 {
    public static void main(String[] args) throws Exception {
        Clicks.main(args);
    }
}
