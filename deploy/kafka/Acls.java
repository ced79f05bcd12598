// Creates SCRAM users and ACLs on the local broker in one JVM (run as a single-file source
// program by deploy/kafka/kafka.sh: java -cp "$LIBS/*" Acls.java BOOTSTRAP add|remove).
//
// Reads standard input, one a line:
//   USER name password                 a SCRAM-SHA-256 user (add only; setting it again is harmless)
//   User:name TOPIC|GROUP name OPERATION   an ALLOW ACL on a literal resource, from any host
// (the ACL lines are what 'packline-admin acls' prints). Adding an ACL that exists is harmless.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialAlteration;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class Acls {
  public static void main(String[] args) throws Exception {
    boolean add = args[1].equals("add");
    List<UserScramCredentialAlteration> users = new ArrayList<>();
    List<AclBinding> acls = new ArrayList<>();
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
    for (String line = in.readLine(); line != null; line = in.readLine()) {
      String[] f = line.trim().split("\\s+");
      if (f.length == 0 || f[0].isEmpty()) continue;
      if (f[0].equals("USER")) {
        users.add(new UserScramCredentialUpsertion(
            f[1], new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), f[2]));
      } else {
        acls.add(new AclBinding(
            new ResourcePattern(ResourceType.valueOf(f[1]), f[2], PatternType.LITERAL),
            new AccessControlEntry(f[0], "*", AclOperation.valueOf(f[3]), AclPermissionType.ALLOW)));
      }
    }
    Properties config = new Properties();
    config.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
    try (Admin admin = Admin.create(config)) {
      if (add) {
        if (!users.isEmpty()) admin.alterUserScramCredentials(users).all().get();
        if (!acls.isEmpty()) admin.createAcls(acls).all().get();
      } else {
        List<AclBindingFilter> filters = new ArrayList<>();
        for (AclBinding acl : acls) filters.add(acl.toFilter());
        if (!filters.isEmpty()) admin.deleteAcls(filters).all().get();
      }
    }
    System.out.println((add ? "added " : "removed ") + acls.size() + " ACL(s), " + users.size() + " user(s)");
  }
}
