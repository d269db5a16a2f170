#!/usr/bin/env python3
"""The route delay penalty Pastry would have with perfect proximity neighbour selection.

N points uniform on a sphere (latency proportional to great-circle distance, as the
simulator's sphere topology), uniform ids, and routing tables in which every cell holds the
candidate nearest to the node (computed, not learned). Routes follow Pastry's rule with a leaf
set of 16; the script prints mean hops and the RDP (mean of per-lookup ratios, as pastry-sim
reports it), median, p95 and the ratio of mean latencies. Needs numpy.

    python3 scripts/ideal_rdp.py 10000                # 3,000 lookups, seed 1
    python3 scripts/ideal_rdp.py 10000 20000 2       # 20,000 lookups, seed 2
"""
import numpy as np, sys
rng=np.random.default_rng(int(sys.argv[3]) if len(sys.argv)>3 else 1)
N=int(sys.argv[1]); L=16
# points on unit sphere
v=rng.normal(size=(N,3)); v/=np.linalg.norm(v,axis=1)[:,None]
ids=rng.integers(0,2**63,size=N,dtype=np.int64).astype(np.uint64)*2+rng.integers(0,2,size=N).astype(np.uint64)  # 64-bit ids suffice
order=np.argsort(ids); sid=ids[order]
def dist(a,b): return np.arccos(np.clip(v[a]@v[b].T,-1,1))
def digit(x,r): return (int(x)>>(60-4*r))&15
def spl(a,b):
    a=int(a);b=int(b)
    for r in range(16):
        if digit(a,r)!=digit(b,r): return r
    return 16
def ringd(a,b):
    d=(int(a)-int(b))%(2**64); return min(d,2**64-d)
def root(key):
    i=np.searchsorted(sid,key)%N; j=(i-1)%N
    a,b=order[i],order[j]
    return a if ringd(ids[a],key)<ringd(ids[b],key) else b
def leafset(n):
    i=np.searchsorted(sid,ids[n]); return [order[(i+k)%N] for k in range(-L//2,L//2+1) if k!=0]
prefix_groups={}
def cell_nodes(pfx_val,r):
    k=(r,pfx_val)
    if k not in prefix_groups:
        shift=60-4*r
        lo=np.uint64(pfx_val<<shift); hi=lo+np.uint64((1<<shift)-1) if shift>0 else lo
        a=np.searchsorted(sid,lo); b=np.searchsorted(sid,hi,side='right')
        prefix_groups[k]=order[a:b]
    return prefix_groups[k]
def route(s,key):
    cur=s; path=[s]
    for _ in range(20):
        ls=leafset(cur)
        lo=min(ls,key=lambda x:(int(ids[x])-int(ids[cur]))%(2**64)) # not used
        # in leaf range?
        members=ls+[cur]
        dl=[(int(ids[x])-int(ids[cur]))%(2**64) for x in ls]
        # cw far and ccw far
        i=np.searchsorted(sid,ids[cur]); ccwfar=ids[order[(i-L//2)%N]]; cwfar=ids[order[(i+L//2)%N]]
        kk=(int(key)-int(ccwfar))%(2**64); span=(int(cwfar)-int(ccwfar))%(2**64)
        if kk<=span:
            nxt=min(members,key=lambda x:ringd(ids[x],key))
            if nxt!=cur: path.append(nxt)
            return path
        r=spl(ids[cur],key)
        pfx=int(key)>>(64-4*(r+1))
        cand=cell_nodes(pfx,r)
        if len(cand)==0: return path+[root(key)]
        d=dist(cur,cand); nxt=cand[np.argmin(d)]
        cur=nxt; path.append(cur)
    return path
rdps=[];routes=[];directs=[];hops=[]
for t in range(int(sys.argv[2]) if len(sys.argv)>2 else 3000):
    s=rng.integers(N); key=np.uint64(rng.integers(0,2**63))*np.uint64(2)
    p=route(s,key)
    if p[-1]==s: continue
    rl=sum(dist(p[i],[p[i+1]])[0] for i in range(len(p)-1)); dd=dist(s,[p[-1]])[0]
    rdps.append(rl/dd); routes.append(rl); directs.append(dd); hops.append(len(p)-1)
r=np.array(rdps); print(N, "hops",np.mean(hops),"rdp mean",r.mean(),"median",np.median(r),"p95",np.percentile(r,95),"ratio of means",np.sum(routes)/np.sum(directs))
