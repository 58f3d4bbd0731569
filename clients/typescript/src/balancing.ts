// Client-side balancing for Node: calls spread round-robin over several replicas, healthy ones only, as the
// Python client's `balance=True` does with gRPC's round_robin and health checking.
//
// The replicas are a list of "host:port" addresses, or a DNS name with a record per replica ("dns:///name:port",
// or "dns://server:port/name:port" to ask a given DNS server), resolved again every RESOLVE_INTERVAL_MS and
// whenever no replica is healthy. Each replica has its own HTTP/2 connection and a grpc.health.v1 Watch on it:
// while the watch says anything but SERVING (no Postgres, say) or is broken (the replica is gone), the replica
// gets no calls. With no healthy replica, calls go to every replica in turn, and fail as the replica answers.

import { Resolver } from "node:dns/promises";
import { isIP } from "node:net";
import { createClient, type Transport } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus } from "./gen/grpc/health/v1/health_pb.js";

/** Milliseconds between two resolutions of a DNS name. */
export const RESOLVE_INTERVAL_MS = 30_000;
/** Milliseconds before a broken health watch of a replica is opened again. */
const WATCH_RETRY_MS = 1_000;

/** One replica: its transport, whether its health watch says SERVING, and how to let it go. */
interface Replica {
  readonly address: string;
  readonly transport: Transport;
  serving: boolean;
  readonly close: () => void;
}

/** What the balancer needs to reach one address: a transport and a way to close it. */
export type ReplicaFactory = (address: string) => { transport: Transport; close: () => void };

/** The DNS part of a target: the name, its port, and the DNS server to ask ("" for the system's). */
interface DnsTarget {
  name: string;
  port: string;
  server: string;
}

/** Reads "dns:///name:port" and "dns://server:port/name:port"; null for anything else. */
export function parseDnsTarget(target: string): DnsTarget | null {
  const match = /^dns:\/\/([^/]*)\/(.+):(\d+)$/.exec(target);
  if (match === null) {
    return null;
  }
  return { server: match[1] ?? "", name: match[2] ?? "", port: match[3] ?? "" };
}

/** A Transport that sends each call to the next healthy replica (see the top of this file). */
export class BalancingTransport implements Transport {
  private readonly replicas = new Map<string, Replica>();
  private next = 0;
  private closed = false;
  private readonly resolver: Resolver | null;
  private readonly dns: DnsTarget | null;
  private timer: ReturnType<typeof setInterval> | undefined;
  private resolving: Promise<void> | undefined;

  private constructor(
    targets: readonly string[],
    private readonly factory: ReplicaFactory,
  ) {
    this.dns = targets.length === 1 ? parseDnsTarget(targets[0] ?? "") : null;
    this.resolver = this.dns === null ? null : new Resolver();
    if (this.dns !== null && this.dns.server !== "" && this.resolver !== null) {
      this.resolver.setServers([this.dns.server]);
    }
    if (this.dns === null) {
      this.update(targets);
    }
  }

  /** A balancer over `targets`: several "host:port" addresses, or one DNS target, resolved before the first
   * call. `factory` opens the connection to one address. */
  static create(targets: readonly string[], factory: ReplicaFactory): BalancingTransport {
    const balancer = new BalancingTransport(targets, factory);
    if (balancer.dns !== null) {
      balancer.timer = setInterval(() => void balancer.resolve(), RESOLVE_INTERVAL_MS);
      balancer.timer.unref();
    }
    return balancer;
  }

  /** The replicas' addresses and whether each is healthy, for diagnostics. */
  get health(): ReadonlyMap<string, boolean> {
    return new Map([...this.replicas.values()].map((r) => [r.address, r.serving]));
  }

  unary: Transport["unary"] = async (method, signal, timeoutMs, header, input, contextValues) =>
    (await this.pick()).transport.unary(method, signal, timeoutMs, header, input, contextValues);

  stream: Transport["stream"] = async (method, signal, timeoutMs, header, input, contextValues) =>
    (await this.pick()).transport.stream(method, signal, timeoutMs, header, input, contextValues);

  /** Stops resolving and watching, and closes every replica's connection. */
  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    for (const replica of this.replicas.values()) {
      replica.close();
    }
    this.replicas.clear();
  }

  private async pick(): Promise<Replica> {
    if (this.replicas.size === 0 || ![...this.replicas.values()].some((r) => r.serving)) {
      if (this.dns !== null) {
        await this.resolve();
      }
    }
    const all = [...this.replicas.values()];
    if (all.length === 0) {
      throw new Error(`no address for ${this.dns?.name ?? "the targets"}`);
    }
    const healthy = all.filter((r) => r.serving);
    const choices = healthy.length > 0 ? healthy : all;
    this.next = (this.next + 1) % choices.length;
    return choices[this.next] as Replica;
  }

  /** Resolves the DNS name once (calls at the same time share one lookup). */
  private resolve(): Promise<void> {
    if (this.resolving === undefined) {
      this.resolving = this.lookup().finally(() => (this.resolving = undefined));
    }
    return this.resolving;
  }

  private async lookup(): Promise<void> {
    const { dns, resolver } = this;
    if (dns === null || resolver === null) {
      return;
    }
    let addresses: string[];
    if (isIP(dns.name) !== 0) {
      addresses = [dns.name];
    } else {
      try {
        addresses = await resolver.resolve4(dns.name);
      } catch {
        // The replicas known so far stay; the next resolution may succeed.
        return;
      }
    }
    this.update(addresses.map((address) => `${address}:${dns.port}`));
  }

  /** Keeps the replicas of `addresses`: new ones are connected and watched, gone ones closed. */
  private update(addresses: readonly string[]): void {
    if (this.closed) {
      return;
    }
    const wanted = new Set(addresses);
    for (const [address, replica] of this.replicas) {
      if (!wanted.has(address)) {
        replica.close();
        this.replicas.delete(address);
      }
    }
    for (const address of wanted) {
      if (!this.replicas.has(address)) {
        this.replicas.set(address, this.open(address));
      }
    }
  }

  private open(address: string): Replica {
    const { transport, close } = this.factory(address);
    const stop = new AbortController();
    const replica: Replica = {
      address,
      transport,
      serving: false,
      close: () => {
        stop.abort();
        close();
      },
    };
    void this.watch(replica, stop.signal);
    return replica;
  }

  /** Follows the replica's health until `signal` aborts, reopening a broken watch after WATCH_RETRY_MS. */
  private async watch(replica: Replica, signal: AbortSignal): Promise<void> {
    const health = createClient(Health, replica.transport);
    while (!signal.aborted) {
      try {
        for await (const reply of health.watch({}, { signal })) {
          replica.serving = reply.status === HealthCheckResponse_ServingStatus.SERVING;
        }
      } catch {
        // Broken (the replica is gone, or restarting): no calls until a watch says SERVING again.
      }
      replica.serving = false;
      await new Promise<void>((wake) => setTimeout(wake, WATCH_RETRY_MS).unref());
    }
  }
}
