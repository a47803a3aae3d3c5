#!/bin/bash

# Parameters
#SBATCH --array=0-39%40
#SBATCH --cpus-per-task=2
#SBATCH --error=/scratch/users/me/zenodo-hpc/zenodo-ml/logs/submitit/%A_%a/%A_%a_0_log.err
#SBATCH --job-name=zenodo-hpc-zenodo-ml-g1
#SBATCH --mail-type=FAIL
#SBATCH --mem=8GB
#SBATCH --nodes=1
#SBATCH --open-mode=append
#SBATCH --output=/scratch/users/me/zenodo-hpc/zenodo-ml/logs/submitit/%A_%a/%A_%a_0_log.out
#SBATCH --partition=normal
#SBATCH --qos=normal
#SBATCH --signal=USR2@120
#SBATCH --time=120
#SBATCH --wckey=submitit

# setup
module load python/3.11
source $SCRATCH/venv/bin/activate

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output /scratch/users/me/zenodo-hpc/zenodo-ml/logs/submitit/%A_%a/%A_%a_%t_log.out --error /scratch/users/me/zenodo-hpc/zenodo-ml/logs/submitit/%A_%a/%A_%a_%t_log.err python3 -u -m submitit.core._submit /scratch/users/me/zenodo-hpc/zenodo-ml/logs/submitit/%j
