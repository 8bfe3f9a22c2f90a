"""Probe: how much could a better expert-choice rule gain? (ODEBench-10B, the shipped model's run)

Fits every adaptation environment from every start of ``expert_starts`` (all fits at once,
``STEPS`` steps each), then compares choice rules on the same fits by the forecast relMSE of the
32 test trajectories of each environment (mean over environments):

- ``loss``: the lowest fitting loss (what ``adapt_new`` does);
- ``oracle``: the fit with the lowest *test* error (the best any rule could do with these fits);
- ``zero-start``: the paper's single start;
- ``map<lam>``: fitting loss + lam * z^2, z the root-mean-square standardised distance of the
  fit's own context part from its expert's training contexts (a prior on contexts);
- ``min-z``: the fit closest to its expert's training contexts.

    python benchmarks/adaptation_probe.py runs/pretrained/odebench-10b-geps 300
"""
import sys, json, numpy as np, jax.numpy as jnp, jax
sys.path.insert(0,'benchmarks')
from adaptation import trained_of_run, family_experts
from mixerdsr.adaptation import _adapt, expert_starts, _final_losses
from mixerdsr.data import load_dataset
from mixerdsr.inference import predict, routes
from mixerdsr import metrics as M
from pathlib import Path
run=Path(sys.argv[1]); steps=int(sys.argv[2])
tm=trained_of_run(run); cfg=tm.config; model=tm.model
splits=load_dataset(run/'data.npz')
ad=splits['adapt_train'].stride_time(cfg.data.time_stride); te=splits['adapt_test']
x,t=jnp.asarray(ad.x,jnp.float32),jnp.asarray(ad.t,jnp.float32)
E=x.shape[0]
starts=expert_starts(model,tm.contexts); S=starts.shape[0]
init=jnp.repeat(starts,E,0); xs=jnp.tile(x,(S,1,1,1)); ts=jnp.tile(t,(S,1))
import time; t0=time.time()
fit,_=_adapt(model,xs,ts,init,steps,cfg.adapt.lr,cfg.solver,False,1.0)
print('fit s',time.time()-t0)
loss=np.asarray(_final_losses(model,fit,xs,ts,cfg.solver)).reshape(S,E)
r=np.asarray(routes(model,fit)).reshape(S,E)
xt=jnp.tile(jnp.asarray(te.x,jnp.float32),(S,1,1,1)); tt=jnp.tile(jnp.asarray(te.t,jnp.float32),(S,1))
p,ok=predict(model,fit,xt,tt,cfg.solver)
test=np.asarray(M.per_env_rel_mse(jnp.asarray(p),xt)).reshape(S,E)
test=np.where(np.isfinite(test),test,1e9)
# distance of own part to that expert's training contexts
tr_r=tm.routes; C=np.asarray(tm.contexts); F=np.asarray(fit)
Mx=model.n_experts; c=cfg.model.context_size//Mx
z=np.zeros((S,E))
for s in range(S):
  for e in range(E):
    m=r[s,e]; own=C[tr_r==m][:, m*c:(m+1)*c]
    if len(own)==0: z[s,e]=1e3; continue
    mu=own.mean(0); sd=own.std(0)+1e-3*np.abs(own).mean()+1e-6
    z[s,e]=np.sqrt((((F[s*E+e, m*c:(m+1)*c]-mu)/sd)**2).mean())
fe=family_experts(tm); want=np.array([fe[int(f)] for f in ad.family])
np.savez(Path('runs') / f'adaptation-probe-{run.name}.npz',loss=loss,r=r,test=test,z=z,want=want,family=ad.family)
def rep(name, idx):
  tv=test[idx,np.arange(E)]; ex=r[idx,np.arange(E)]
  # overall relMSE approx: mean of per-env
  print(f'{name:12s} to-family {np.mean(ex==want):.2f} mean per-env test relMSE {tv.mean():.3f} median {np.median(tv):.3f}')
rep('loss', loss.argmin(0))
rep('oracle', test.argmin(0))
rep('zero-start', np.zeros(E,int))
for lam in [1e-4,1e-3,1e-2,1e-1]:
  rep(f'map{lam}', (loss+lam*z**2).argmin(0))
rep('min-z', z.argmin(0))
